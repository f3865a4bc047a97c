"""Request and response models: the API's contract, as it appears in the OpenAPI spec."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Channel(StrEnum):
    email = "email"
    app = "app"


class ReasonOut(BaseModel):
    source: str = Field(description="'cf' (collaborative filtering) or 'popular'")
    because: list[str] = Field(
        default_factory=list,
        description="for 'cf': the customer's purchased items that most explain the offer",
    )
    text: str = Field(description="the reason in words, for a marketer or a customer")


class OfferOut(BaseModel):
    item_id: str
    item_name: str | None = None
    score: float
    rank: int
    reason: ReasonOut


class OffersResponse(BaseModel):
    customer_id: str
    model_version: str
    channel: Channel
    personalized: bool = Field(description="false when nothing is known of the customer")
    profile: str = Field(
        description="'trained' (the model's own view of the customer), 'updated' (refolded "
        "with purchases posted since training), 'live' (unknown to the model, personalized "
        "from posted purchases) or 'none' (popular items)"
    )
    suppressed_items: int = Field(description="items held back because just bought")
    as_of: str = Field(description="the service clock the offers were computed at")
    request_id: str = Field(description="names this answer; impressions refer to it")
    recorded: bool = Field(False, description="the impressions of these offers were recorded")
    suppressed_reason: str | None = Field(
        None,
        description="why there are no offers: 'frequency_cap', or 'no_channel_consent' "
        "(the customer withdrew consent for this channel)",
    )
    next_allowed_at: str | None = Field(
        None, description="with 'frequency_cap': when the next delivery is allowed"
    )
    removed: dict[str, int] = Field(
        default_factory=dict,
        description="candidates each rule removed: 'just_bought', 'fatigue'",
    )
    offers: list[OfferOut]


class SimilarItemOut(BaseModel):
    item_id: str
    item_name: str | None = None
    score: float
    rank: int


class SimilarItemsResponse(BaseModel):
    item_id: str
    model_version: str
    similar: list[SimilarItemOut]


class ModelSummary(BaseModel):
    version: str
    created_at: str
    schema_version: int
    loaded_at: str
    customers: int
    items: int
    data: dict[str, Any]
    split: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, dict[str, dict[str, float]]]
    quality_gate: dict[str, Any]
    libraries: dict[str, str]


class HealthResponse(BaseModel):
    status: str
    model_version: str | None = None
    reason: str | None = None


class ErrorDetail(BaseModel):
    field: str
    problem: str


class ErrorResponse(BaseModel):
    error: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)
