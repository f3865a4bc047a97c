"""The store: what the service learns between trainings (events, consent, erasures),
campaign files and deployment keys, kept in a database that outlives the process.

``base`` is the contract the rest of nbo talks to; ``sql`` implements it once in SQL for
two backends: SQLite (``sqlite``, the embedded default: one file) and PostgreSQL
(``postgres``: one server shared by replicas). ``NBO_STORE_URL`` picks one
(``open_store``); ``migrations`` holds the versioned schema of both.

Consent and erasure, on either backend:

- **Consent**: one record per customer, a personalization flag and a flag per channel.
  No record, or a channel the record does not name, means consent (the default for a
  customer who never said otherwise; see ``Consent.allows``). Every change is also
  appended to the customer's consent history (when, and from where: the API or the
  command line), so nbo can show when consent was given or withdrawn.
- **Erasure** (``erase``) deletes everything the store holds on a customer (events, their
  purchase lines, the consent record and history) in one transaction and keeps only a
  keyed hash of the id and the time on the ``erased`` list (``nbo.core.erased``: the id
  itself is not kept), which the service applies to every model it loads and the
  trainer applies to its input file, by hashing the ids they hold.
- **Events after erasure** are accepted and stored like any other: erasure is not a block
  list, and a returning customer's new purchases are theirs to use (offers personalize
  from them as for any customer the model does not know). The id stays on the erased list
  for good: the model row learned before the erasure is never served again, and the
  trainer drops *every* row of an erased id from its input file, since a file cannot be
  trusted to tell old rows from new ones. Erasing again deletes the new events too.
- **Batch outputs**: the campaign files ``nbo batch`` wrote and still manages are
  registered here (``batch_outputs``: paths, not rows), so an erasure can find them and
  take the customer out of them too (``nbo.campaigns.files``).
- **Retention** (``purge``): what is older than a cutoff goes, one kind at a time, in
  small transactions; the caller (``nbo.runtime.retention``) refuses a cutoff the running
  rules still read.
- **Deliveries** (``deliver``): offers that will be shown are decided and their
  impressions recorded in one transaction holding the customer's lock, so two deliveries
  to one customer, from one process or several sharing the store, never both pass a
  frequency cap that allows one.
"""

from nbo.store.urls import (
    TrainingExclusions,
    check_store_exists,
    check_store_url,
    open_existing_store,
    open_store,
    read_erased_list,
    read_pseudonym_key,
    read_training_exclusions,
    store_location,
    store_setting,
)

__all__ = [
    "TrainingExclusions",
    "check_store_exists",
    "check_store_url",
    "open_existing_store",
    "open_store",
    "read_erased_list",
    "read_pseudonym_key",
    "read_training_exclusions",
    "store_location",
    "store_setting",
]
