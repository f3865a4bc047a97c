"""Canonical column names, so the same string never appears in two spellings.

Every purchase file is renamed to these columns at the edge (see ``purchases``); the
rest of the code only knows these constants.
"""

from typing import Final

CUSTOMER_ID: Final = "customer_id"
ITEM_ID: Final = "item_id"
TIMESTAMP: Final = "timestamp"
QUANTITY: Final = "quantity"
PRICE: Final = "price"
ORDER_ID: Final = "order_id"
ITEM_NAME: Final = "item_name"

REQUIRED_COLUMNS: Final = (CUSTOMER_ID, ITEM_ID, TIMESTAMP)
OPTIONAL_COLUMNS: Final = (QUANTITY, PRICE, ORDER_ID, ITEM_NAME)
ALL_COLUMNS: Final = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
