"""The JSON the edge answers, as pydantic models: the one description of the HTTP contract.

FastAPI reads these models for the OpenAPI document (``/openapi.json``, ``/docs``), and the web page's
API types are generated from that document (``make web-types`` → ``web/src/lib/api-types.ts``), so a
field changed here shows up in the page's type check instead of at run time.

Every key the original clients read is here with the shape they read (``../shared/reference`` and the
tests): keys that may be ``null`` are present as ``null``, never left out, so no model has defaults
that would let a key go missing. Models that carry billing's replies through unchanged (the WeChat
routes) allow extra keys: billing owns those replies, and a field it adds reaches the mini-program
even before it is described here.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

#: A task's status (``bus.schemas.STATUSES``).
Status = Literal["queued", "processing", "completed", "failed"]


class ErrorBody(BaseModel):
    """Every failure: ``{"error": "<a sentence a person understands>"}`` (``edge/errors.py``); some add
    keys (the WeChat routes ``success: false``, a refused cancel or download ``current_status`` and ``task_id``)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="What went wrong, in a sentence meant for the user: in Chinese when the request "
                                   "asks for it (Accept-Language: zh..., or ?lang=zh), else in English")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these status codes answer :class:`ErrorBody` (422 included, which
    ``edge/errors.py`` answers in this shape instead of FastAPI's validation details)."""
    return {code: {"model": ErrorBody} for code in sorted({*codes, 422})}


def stream_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """:func:`errors` for a route whose success is not JSON (an event stream): FastAPI would file a
    ``model`` under the success's media type, so the JSON body is named by reference (the JSON routes
    put :class:`ErrorBody` among the document's schemas)."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {code: {"content": body, "description": "An error"} for code in sorted({*codes, 422})}


class NotifyRefusal(BaseModel):
    """A WeChat Pay notify that billing did not accept, answered as WeChat expects (it then retries)."""

    code: Literal["FAIL"]
    message: str


# --- tasks -----------------------------------------------------------------------------------
class Accepted(BaseModel):
    """``POST /api/v1/enhance``: the task was queued (or, for a repeated ``Idempotency-Key``, already was)."""

    task_id: str
    status: Status
    message: str
    created_at: float = Field(description="Unix time")


class TaskOptions(BaseModel):
    """The options the task runs with (the names the clients send)."""

    scale: int
    quality_level: str
    tile_size: int
    face_enhance: bool | None = Field(description="null: restore faces when the service can")
    face_strength: float = Field(description="How much of a restored face replaces the photo's own: 0 (the "
                                             "original face) to 1 (fully restored)")
    output_format: Literal["auto", "jpeg", "png", "webp", "avif"] = Field(
        description="auto: PNG stays PNG, as does a photo with transparency; anything else becomes JPEG")
    output_quality: int = Field(description="1–100; used by jpeg, webp and avif")


class TaskInput(BaseModel):
    filename: str
    width: int
    height: int
    size: int = Field(description="Bytes")


class TaskOutput(BaseModel):
    filename: str | None
    content_type: str | None
    width: int | None
    height: int | None
    size: int | None = Field(description="Bytes")
    engine: str | None
    faces: int | None = Field(description="Faces restored")


class TaskStatus(BaseModel):
    """``GET /api/v1/status/{task_id}``, a cancel's answer, and the ``status`` event of the event stream."""

    task_id: str
    status: Status
    stage: str | None = Field(description="queued, fetched, decoded, faces_detected, restoring, upscaling, "
                                          "encoding, stored, completed, failed or cancelled")
    message: str | None = Field(description="What is happening, in a sentence in the request's language")
    progress: float = Field(description="0 to 1")
    queue_position: int | None = Field(description="1 = next, while queued")
    result_url: str | None = Field(description="Where to download the result, once completed")
    download_url: str | None = Field(description="The same as result_url (the original's documented name)")
    error: str | None = Field(description="Why it failed, in a sentence in the request's language")
    created_at: float
    updated_at: float
    processing_time: float | None = Field(description="Seconds")
    attempts: int
    options: TaskOptions
    input: TaskInput
    output: TaskOutput | None = Field(description="Once completed")
    output_scale: float = Field(description="The scale the result is (or will be) made at: options.scale, or "
                                            "less when the result would exceed the service's size limits")
    notice: str | None = Field(description="Something to tell the person about the result, e.g. that it was "
                                           "enlarged less than asked to stay under the size limit on results")
    eta_seconds: int | None = Field(description="About how many seconds until it is done, while queued or "
                                                "processing, from the enhancers' measured pace (README, \"How long "
                                                "will it take?\"); null when not measured yet, or once it has ended")


class Deleted(BaseModel):
    """``DELETE /api/v1/tasks/{task_id}``: the photo, its result and its record are gone."""

    success: bool = True
    task_id: str
    deleted: bool = True


class TaskProgress(BaseModel):
    """The ``progress`` event of the event stream: live from the enhancer, not persisted."""

    task_id: str
    stage: str | None
    progress: float = Field(description="0 to 1")
    message: str | None
    eta_seconds: int | None = Field(description="About how many seconds until it is done, from the pace of its "
                                                "enhancer so far; null when it cannot tell yet")


# --- presigned uploads ---------------------------------------------------------------------------
class PresignedUpload(BaseModel):
    """``POST /api/v1/upload/presigned-url``: ``PUT`` the photo to ``presigned_url``, then name ``file_key``."""

    success: Literal[True]
    presigned_url: str
    file_key: str
    cos_key: str = Field(description="The same as file_key (the original client's name)")
    method: Literal["PUT"]
    expires_in: int = Field(description="Seconds the URL is valid")
    max_size: int = Field(description="Most bytes the URL accepts")


class ProcessedUpload(BaseModel):
    """``POST /api/v1/single-process-uploaded-image`` once the task completed."""

    success: Literal[True]
    task_id: str
    status: Literal["completed"]
    cdn_url: str = Field(description="A presigned URL of the result")
    result_url: str = Field(description="The same as cdn_url")
    download_url: str = Field(description="The result through the edge")
    width: int | None
    height: int | None
    size: int | None
    content_type: str | None
    download_time: float = Field(description="Seconds to fetch and check the upload")
    processing_time: float | None
    upload_time: float | None = Field(description="Seconds to store the result")
    total_time: float


class UnfinishedUpload(BaseModel):
    """``POST /api/v1/single-process-uploaded-image`` when the task failed (422), or is still running when
    the wait ends (202: poll ``/api/v1/status/{task_id}``)."""

    success: Literal[False]
    task_id: str
    status: Status
    error: str


# --- WeChat (billing's replies, passed on) -------------------------------------------------------
Data = TypeVar("Data", bound=BaseModel)


class WeChatOk(BaseModel, Generic[Data]):
    """The original gateway's success shape, which the mini-program reads."""

    success: Literal[True]
    data: Data


class _FromBilling(BaseModel):
    model_config = ConfigDict(extra="allow")


class Session(_FromBilling):
    """Our session for the mini-program (never WeChat's ``session_key``)."""

    openid: str
    token: str = Field(description="Send as 'Authorization: Bearer <token>'")
    expires_at: float


class PayCreated(_FromBilling):
    out_trade_no: str
    product: str
    amount: int = Field(description="Fen")
    pay_params: dict[str, str] = Field(description="wx.requestPayment's parameters (signType RSA)")


class Order(_FromBilling):
    out_trade_no: str
    product: str
    amount: int = Field(description="Fen")
    status: str = Field(description="PENDING, PAID, CLOSED or REFUNDED")
    created_at: float
    paid_at: float | None
    transaction_id: str | None


class RefundStarted(_FromBilling):
    out_trade_no: str
    out_refund_no: str
    amount: int = Field(description="Fen")
    status: str


class OrderRow(_FromBilling):
    """An order in a list (``/account``, ``/pay/orders``)."""

    out_trade_no: str
    product: str
    amount: int = Field(description="Fen")
    credits: int
    unlimited_days: int
    status: str
    created_at: float
    paid_at: float | None


class UseRow(_FromBilling):
    """A charged enhancement."""

    task_id: str
    use: str = Field(description="credit, free or unlimited")
    reserved_at: float
    charged_at: float | None


class Account(_FromBilling):
    openid: str
    credits: int = Field(description="Left, not counting those held by tasks still running")
    credits_reserved: int = Field(description="Held by tasks still running")
    unlimited: bool
    unlimited_until: float | None
    free_daily: int
    free_left_today: int
    orders: list[OrderRow] = Field(description="Paid orders, newest first")
    uses: list[UseRow] = Field(description="Charged enhancements, newest first")


class Orders(_FromBilling):
    orders: list[OrderRow] = Field(description="Newest first")


class PaidDay(_FromBilling):
    day: str = Field(description="YYYY-MM-DD, China time")
    orders: int
    amount: int = Field(description="Fen")


class Stats(_FromBilling):
    by_status: dict[str, int]
    by_day: list[PaidDay] = Field(description="Newest first")
    paid_orders: int
    paid_amount: int = Field(description="Fen")
