"""Request and response models: the API's contract, as it appears in the OpenAPI spec."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nbo.models.artifacts import VERSION_NAME


class Channel(StrEnum):
    email = "email"
    app = "app"


class ReasonOut(BaseModel):
    source: str = Field(
        description=(
            "'cf' (collaborative filtering), 'buy_again' (the customer's own history), "
            "'also_bought' (bought with the customer's items), 'popular_in_stage' (popular "
            "with customers in the same lifecycle stage), 'popular' or 'catalog' (an incentive)"
        )
    )
    because: list[str] = Field(
        default_factory=list,
        description="for 'cf': the customer's purchased items that most explain the offer",
    )
    text: str = Field(description="the reason in words, for a marketer or a customer")


class ComponentsOut(BaseModel):
    """priority = propensity x value x stage_weight x lever."""

    propensity: float = Field(description="probability the customer takes the offer up")
    value: float = Field(description="what one take-up is worth to the business")
    stage_weight: float = Field(description="the stage policy's weight for this kind")
    lever: float = Field(description="the marketer's weight for this offer")


class BestSendTimeOut(BaseModel):
    hour_of_week: int = Field(description="0..167, Monday 00:00 UTC = 0")
    day: str = Field(description="weekday name (UTC)")
    hour: int = Field(description="hour of the day (UTC)")
    next_at: str = Field(description="the next such hour after the service clock")


class OfferOut(BaseModel):
    offer_id: str = Field(
        description="one offer within this answer: the catalogue offer's id, "
        "'<offer id>:<item>' for an item of a category offer, 'product:<item>' for an item "
        "on its own terms"
    )
    kind: str = Field(description="'product' or 'incentive'")
    item_id: str | None = Field(None, description="the item, for a product offer")
    item_name: str | None = None
    title: str | None = Field(
        None,
        description="the catalogue offer's title: an incentive's, or a product or category "
        "offer's (null for an item offered on its own terms)",
    )
    incentive: str | None = Field(
        None, description="percent_off, points_multiplier or free_shipping"
    )
    amount: float | None = Field(None, description="percent or multiplier of an incentive")
    priority: float = Field(description="what the offers are ranked by (see components)")
    components: ComponentsOut
    score: float = Field(description="the source's own score (ALS score, popularity)")
    rank: int
    reason: ReasonOut | None = Field(
        description="why this offer; null when the call asked for none (reasons=false)"
    )


class OffersResponse(BaseModel):
    customer_id: str
    model_version: str
    channel: Channel
    personalized: bool = Field(
        description="the offers are ranked for this customer: false for popular items (nothing "
        "known of the customer, no consent to personalization, an experiment's control) "
        "and when there are no offers (suppressed_reason)"
    )
    profile: str | None = Field(
        description="whose taste ranked the offers: 'trained' (the model's own view of the "
        "customer), 'updated' (refolded with purchases posted since training), 'live' "
        "(unknown to the model, personalized from posted purchases) or 'none' (popular "
        "items: nothing known, or no consent to personalization); null when no offers "
        "were ranked (suppressed_reason says why; stage and churn_risk still describe "
        "the customer)"
    )
    suppressed_items: int = Field(description="items held back because just bought")
    stage: str = Field(description="lifecycle stage: new, active, at_risk, lapsed, loyal")
    churn_risk: float | None = Field(
        None, description="probability of no purchase in the churn horizon (null: unknown)"
    )
    best_send_time: BestSendTimeOut
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
        description="candidates each rule removed, always all four: 'just_bought', "
        "'fatigue', 'ineligible' (catalogue: stage, channel, dates), 'offer_cap' (shown too "
        "often); zeros when the answer is withheld (suppressed_reason)",
    )
    experiment: str | None = Field(
        None, description="the experiment the customer is in (null: none); echo it on events"
    )
    variant: str | None = Field(
        None, description="the experiment's variant that answered (null: no experiment)"
    )
    offers: list[OfferOut]


class CustomerProfileOut(BaseModel):
    customer_id: str
    model_version: str
    known: bool | None = Field(
        description="any purchase known (training data or posted events); null when "
        "withheld (profiled false)"
    )
    profiled: bool = Field(
        description="false without consent to personalization: nothing derived from the "
        "customer's history (stage 'active', no churn risk, the overall best send time; "
        "known, recency, frequency, monetary and first and last purchase null: withheld)"
    )
    stage: str = Field(description="new, active, at_risk, lapsed or loyal")
    churn_risk: float | None = Field(
        None, description="probability of no purchase in the churn horizon (null: unknown)"
    )
    churn_horizon_days: int | None = None
    recency_days: float | None = Field(
        None, description="days since the last purchase (null: none, or withheld)"
    )
    frequency: int | None = Field(
        description="orders, not counting one cancelled or returned in full (null: withheld)"
    )
    monetary: float | None = Field(
        description="total value of the orders, net of returns and cancellations, never "
        "below 0 (null: withheld)"
    )
    first_purchase: str | None = None
    last_purchase: str | None = None
    best_send_time: BestSendTimeOut
    as_of: str


class SimilarItemOut(BaseModel):
    item_id: str
    item_name: str | None = None
    score: float
    rank: int
    buyers: int = Field(description="distinct customers who bought it in the model's data")


class SimilarItemsResponse(BaseModel):
    item_id: str
    model_version: str
    min_buyers: int = Field(
        description="the fewest buyers an item listed has (min_buyers, else "
        "NBO_SIMILAR_MIN_BUYERS): rarer items' factors are noise"
    )
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
    policy: str = Field(
        description="where the product offers come from: the ranker, ALS or a simple rule "
        "(buy_again, itemknn, popularity) the trainer found better on the validation window"
    )
    policy_choice: dict[str, Any] = Field(
        description="why the trainer chose it: each candidate's figure on the validation window"
    )
    served: dict[str, Any] = Field(
        description="what is served against the best simple rule on the holdout, per truth"
    )
    libraries: dict[str, str]
    propensity: dict[str, Any] = Field(
        default_factory=dict,
        description="the propensity curves as calibrated on the holdout (each with its "
        "quality on a held-out half: brier against brier_constant), including buying: "
        "the chance of buying anything, from the churn risk, that product propensities "
        "are multiplied by (or why there is none); unconditional: whether this model's "
        "product propensities are the chance of buying the item (false: given that the "
        "customer buys something, an artifact without the buying curve); calibrated: "
        "false for an artifact from before calibration; rule: the served simple rule's "
        "curves' quality (basis: the one chosen, brier its figure; brier_score and "
        "brier_place each basis's, brier_position the place in the list alone's); "
        "rule_basis: what a simple rule's own items' propensity is read from: score (the "
        "rule's score of the item) or place (its place in the list before suppression), "
        "the popular fill by its place in the list, never rising down the list; position "
        "(an artifact from before: the place in the list alone), or null (no rule curve)",
    )
    lifecycle: dict[str, Any] = Field(
        default_factory=dict,
        description="the stage rules' thresholds this service applies: the loyal ones "
        "as the trainer derived them from the data (config shows null for a derived one) "
        "with where they came from, whether a churn model sets risks, and whether value "
        "is money or units bought (a purchase file without prices)",
    )
    ranker_scoring: Literal["compiled", "lightgbm"] | None = Field(
        default=None,
        description="how the ranker's trees are scored here: compiled (lleaves machine "
        "code, checked against LightGBM when the model loaded) or lightgbm (its C API: "
        "lleaves is not installed, or its scores differed; the log says which); null when "
        "the policy serves no ranker",
    )


class LiveResponse(BaseModel):
    """Liveness: the process answers, and nothing more (what readiness says of the model
    and the store is readiness's)."""

    status: str = Field(description='always "ok"')


class HealthResponse(BaseModel):
    """Readiness."""

    status: str = Field(description='"ready", or "not ready" (503) until a model is loaded')
    model_version: str | None = None
    reason: str | None = Field(None, description="why not ready")
    # Whether the process reaches its store now: calls that need it answer 503
    # store_unavailable meanwhile.
    store: str = Field(description='"available" or "unavailable"')
    warning: str | None = Field(
        None,
        description="the last reload this worker refused, while no later one succeeded: the "
        "model named serves on, and a restart would load the refused one (CURRENT's)",
    )


class ErrorDetail(BaseModel):
    field: str
    problem: str


class ErrorCode(StrEnum):
    """What went wrong, one code per kind of refusal: branch on it, and read details for
    the field. docs/service.md's Error codes table says when each is sent and what to do.
    A later release may add a code: treat one you do not know by its HTTP status."""

    # The docstring is the enum's description in /openapi.json, read by client authors:
    # the table in docs/service.md lists the same codes (a test holds them in step).

    validation_error = "validation_error"  # 422: a parameter, header or body refused
    bad_request = "bad_request"  # 400: the body is not readable as JSON
    unauthorized = "unauthorized"  # 401: no API key, or one nbo does not know
    forbidden = "forbidden"  # 403: the key's role does not allow the call
    not_found = "not_found"  # 404: no such route, item, experiment or model version
    method_not_allowed = "method_not_allowed"  # 405: the path does not take the method
    delivery_repeated = "delivery_repeated"  # 409: the request id names a recorded delivery
    reload_refused = "reload_refused"  # 409: the model or catalogue was not loaded
    payload_too_large = "payload_too_large"  # 413: a body over NBO_MAX_BODY_BYTES
    unsupported_media_type = "unsupported_media_type"  # 415: a compressed body
    internal_error = "internal_error"  # 500: a fault of nbo's (the log says more)
    not_ready = "not_ready"  # 503: no model loaded
    store_unavailable = "store_unavailable"  # 503: the store is away (Retry-After)
    request_timeout = "request_timeout"  # 408: a head not sent in time (no request id)
    request_head_too_large = "request_head_too_large"  # 431: line and headers over 64 KiB


class ErrorResponse(BaseModel):
    error: ErrorCode = Field(
        description="what went wrong (docs/service.md, Error codes): branch on it, and "
        "read details for the field"
    )
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class CatalogProductsOut(BaseModel):
    """The terms every product offer has unless an item override or an offer says otherwise."""

    value: float | None = Field(
        description="money per sale; null = the model's typical line value (or price x margin)"
    )
    price_weighted: bool = Field(description="value = margin x the item's own median price")
    margin: float
    lever: float
    stages: list[str]
    channels: list[str]
    cap_per_customer: int | None = Field(description="impressions per customer in cap_days")
    cap_days: float


class CatalogItemOut(BaseModel):
    item_id: str
    exclude: bool = Field(description="never offered")
    terms: dict[str, Any] = Field(description="the product terms this item changes")


class CatalogOfferOut(BaseModel):
    id: str
    kind: str = Field(description="'product' or 'incentive'")
    title: str | None = None
    incentive: str | None = Field(
        None, description="percent_off, points_multiplier or free_shipping"
    )
    amount: float | None = Field(None, description="percent off or points multiplier")
    item_id: str | None = Field(None, description="a product offer for one item")
    category: str | None = Field(None, description="a product offer for a category")
    value: float | None = Field(
        description="money to the business per redemption or sale; null = as for products"
    )
    response_rate: float | None = Field(
        None, description="an incentive's propensity: the share of customers who take it up"
    )
    lever: float
    stages: list[str]
    channels: list[str]
    valid_from: str | None = None
    valid_to: str | None = None
    live: bool = Field(description="valid at the service clock (valid_from <= now < valid_to)")
    cap_per_customer: int | None = None
    cap_days: float


class UnknownItemsOut(BaseModel):
    model_version: str = Field(description="the model the catalogue's items were looked up in")
    count: int = Field(description="how many items the catalogue names that it does not know")
    first: list[str] = Field(description="the first of them (sorted), at most 5")
    message: str = Field(description="the same, as the warning logged")


class RefusedFileOut(BaseModel):
    """What a reloadable file's holder says of the last version of its file it refused
    (the catalogue, the experiments): one definition, so every route says it alike."""

    last_error: str | None = Field(
        None,
        description="why the file on disk was refused (what was loaded from it before "
        "still serves), on one line: the problem, or 'FILE: N problems: first; second; ...'",
    )
    last_error_problems: list[str] | None = Field(
        None,
        description="the same problems one by one, each naming the file (the first 20, then "
        "how many more); null when nothing is refused",
    )
    last_error_at: str | None = Field(None, description="when it was refused; null when nothing is")


class CatalogResponse(RefusedFileOut):
    source: str | None = Field(description="the catalogue file; null = the default catalogue")
    fingerprint: str = Field(description="sha256 of the file served, or 'default'")
    loaded_at: str = Field(description="when the catalogue served was loaded")
    as_of: str = Field(description="the service clock 'live' is computed at")
    products: CatalogProductsOut
    items: list[CatalogItemOut]
    categories: dict[str, list[str]]
    offers: list[CatalogOfferOut]
    stage_weights: dict[str, dict[str, float]] = Field(
        description="per stage and kind of offer; a stage or kind not listed weighs 1.0"
    )
    max_incentives: int | None = Field(
        description="incentives one answer may carry (those of highest priority); null = no limit"
    )
    incentive_overlaps: list[str] = Field(
        description="groups of incentives eligible together beyond max_incentives (for "
        "a stage and channel, at one time): only the highest-priority of each group goes "
        "out; as warned at load"
    )
    unknown_items: UnknownItemsOut | None = Field(
        None,
        description="items named in items, categories or offers that the model serving "
        "does not know (a typo, or items a newer model will know): their terms, "
        "exclusions and offers apply to nothing; null when it knows them all, or before a "
        "model is loaded",
    )


class ReloadRequest(BaseModel):
    # Strict, as every request body: {"force": "yes"} is refused, not taken for true, and
    # an unknown field is an error rather than silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True)

    version: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        # A plain folder name: no '/', no leading '.', so a request never reaches a folder
        # outside NBO_MODELS_DIR (the rule CURRENT, aliases and NBO_MODEL_VERSION follow).
        pattern=f"^{VERSION_NAME.pattern}$",
        description="a published version or alias; unset = NBO_MODEL_VERSION if pinned, "
        "else what models/CURRENT points at",
    )
    force: bool = Field(False, description="load again even when this version is already serving")
    replicas: bool = Field(
        True,
        description="also record the reload in the store, so every other replica on it loads "
        "the version this one now serves (within a few seconds); false: this replica only "
        "(a canary)",
    )


class CatalogStatusOut(RefusedFileOut):
    source: str | None = Field(description="the catalogue file; null = the default catalogue")
    fingerprint: str
    loaded_at: str | None
    offers: int
    changed: bool = Field(description="this reload swapped in a changed catalogue file")


class ExperimentsStatusOut(RefusedFileOut):
    source: str | None = Field(description="the experiments file; null = no experiments")
    experiments: list[str] = Field(description="the experiments serving, in file order")
    loaded_at: str | None = Field(description="when the file serving was read")
    changed: bool = Field(description="this reload swapped in a changed experiments file")


class WorkerReloadOut(BaseModel):
    pid: int = Field(description="the worker process")
    version: str | None = Field(description="the model it serves now; null = none")
    reloaded: bool = Field(
        description="it took this reload (or a later one); false when it had not answered "
        "by the end of the wait"
    )
    experiment_models: list[str] = Field(
        [],
        description="the versions its experiment arms serve besides the current one (an "
        "alias an arm names resolved when this worker last reloaded)",
    )
    error: str | None = Field(description="why it refused the version; null = it did not")


class ReloadResponse(BaseModel):
    previous_version: str | None = Field(description="the model serving before; null = none")
    version: str = Field(description="the model serving now")
    swapped: bool = Field(description="false when the version was already serving (no force)")
    catalog: CatalogStatusOut
    experiments: ExperimentsStatusOut | None = Field(
        None, description="the experiments file (NBO_EXPERIMENTS), read again by the reload"
    )
    took_ms: float = Field(description="this worker's reload")
    all_workers: bool = Field(
        description="every live worker took this reload and serves the version, with the "
        "same model for every experiment arm (each resolved the arms' aliases again)"
    )
    workers: list[WorkerReloadOut] = Field(
        description="each live worker of nbo serve (one without workers), by pid"
    )
    replicas: bool = Field(
        description="the reload was recorded in the store for every other replica on it to "
        "follow (false when not asked, or the store was away: reload each one then)"
    )
