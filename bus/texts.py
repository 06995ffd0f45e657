"""Sentences a person reads, in English and Simplified Chinese: each written once, put into words late.

Whoever tells a person something (a refusal of the edge or of billing, a task's progress, why a task failed)
names an entry of this catalogue and its values: a :class:`Said`. Words are chosen only where the answer
leaves the service, in the reader's language: the edge renders each request's in the language that request
asks for (:func:`negotiate`). What travels or is stored carries the entry's key and values
(:meth:`Said.to_dict`) beside the English sentence, so a reader that does not know the key (an older edge)
still has words to show, and a record written before keys existed stays readable as it was
(:func:`restore`).

    EMPTY = Text("upload.empty", en="The uploaded file is empty.", zh="上传的文件是空的。")
    raise ApiError(400, EMPTY())            # str(EMPTY()) is the English sentence

Templates are ``str.format`` templates and both languages name the same values (a test checks every entry).
A value may itself be a ``Said``, said in the same language (a status word inside a sentence). An exception
may carry a ``Said`` as its argument: its ``str()`` is then the English sentence (:func:`said_of`).

The entries said by more than one service live here (the task record's sentences, written by the enhancer
and the edge; billing's refusals, which the edge relays); the edge's own are in ``edge/texts.py``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Language = Literal["en", "zh"]
EN: Language = "en"
ZH: Language = "zh"
LANGUAGES: tuple[Language, ...] = (EN, ZH)
#: What a request that names neither language gets.
DEFAULT: Language = EN

#: Every entry by key (each module's entries register themselves when it is imported).
CATALOGUE: dict[str, Text] = {}

_FORMATTER = string.Formatter()


def placeholders(template: str) -> set[str]:
    """The names of the values ``template`` uses (``{hours:g}`` → ``hours``)."""
    return {re.split(r"[.\[]", name)[0] for _, name, _, _ in _FORMATTER.parse(template) if name is not None}


@dataclass(frozen=True)
class Text:
    """One catalogue entry: a sentence in each language. Calling it with values makes a :class:`Said`."""

    key: str
    en: str
    zh: str

    def __post_init__(self) -> None:
        if self.key in CATALOGUE:
            raise ValueError(f"two catalogue entries are named {self.key!r}")
        CATALOGUE[self.key] = self

    def __call__(self, **values: Any) -> Said:
        return Said(self.key, values)

    def template(self, language: Language) -> str:
        return self.zh if language == ZH else self.en


@dataclass(frozen=True)
class Said:
    """An entry and its values: something said, not yet put into words. ``str()`` is the English."""

    key: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def render(self, language: Language = DEFAULT) -> str:
        """The sentence in ``language``; ``KeyError``/``ValueError`` when the key or a value does not fit."""
        values = {k: v.render(language) if isinstance(v, Said) else v for k, v in self.values.items()}
        return CATALOGUE[self.key].template(language).format_map(values)

    def __str__(self) -> str:
        return render(self, EN)

    def to_dict(self) -> dict[str, Any]:
        """What a record or a reply carries: ``{"key": ..., "values": {...}}`` (nested ones the same way)."""
        values = {k: v.to_dict() if isinstance(v, Said) else v for k, v in self.values.items()}
        return {"key": self.key, "values": values}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Said:
        """The inverse of :meth:`to_dict`; ``ValueError`` for anything else."""
        key, values = data.get("key"), data.get("values", {})
        if not isinstance(key, str) or not isinstance(values, Mapping):
            raise ValueError("not a catalogue sentence")
        return cls(key, {str(k): cls.from_dict(v) if isinstance(v, Mapping) else v for k, v in values.items()})


def render(said: Said, language: Language) -> str:
    """:meth:`Said.render` that never fails (never a 500 for a sentence): in English when the values do not
    fit ``language``'s words, else the bare key."""
    for lang in (language, EN):
        try:
            return said.render(lang)
        except (KeyError, ValueError, IndexError, TypeError, AttributeError):
            continue
    return said.key


def restore(stored: Mapping[str, Any] | None, english: str | None) -> Said | None:
    """What a record or reply said, from its key and values (``stored``) and the English written beside them.

    The key and values are used when this catalogue renders them into that same English (whitespace aside):
    otherwise (a record older than keys, a writer newer than this reader, a sentence changed since) the
    English itself is what was said, in every language."""
    if english is None:
        return None
    if stored is not None:
        try:
            said = Said.from_dict(stored)
            if " ".join(said.render(EN).split()) == " ".join(english.split()):
                said.render(ZH)
                return said
        except (KeyError, ValueError, IndexError, TypeError, AttributeError):
            pass
    return verbatim(english)


def stored(**sentences: Said | None) -> dict[str, Any]:
    """Record fields for each named sentence: ``name`` (the English) and ``name_text`` (key and values)."""
    out: dict[str, Any] = {}
    for name, said in sentences.items():
        out[name] = None if said is None else str(said)
        out[f"{name}_text"] = None if said is None else said.to_dict()
    return out


def pack(said: Said) -> bytes:
    """A sentence as the body of a reply (billing's refusals): JSON."""
    return json.dumps(said.to_dict(), ensure_ascii=False).encode()


def unpack(data: bytes | None) -> dict[str, Any] | None:
    """The key and values a reply's body carries, or ``None`` (no body, or not ours)."""
    if not data:
        return None
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def said_of(exc: BaseException) -> Said:
    """What an exception says: the ``Said`` it was raised with, else its text in every language."""
    arg = exc.args[0] if exc.args else None
    return arg if isinstance(arg, Said) else verbatim(str(exc))


def negotiate(accept_language: str | None) -> Language:
    """The language for an ``Accept-Language`` header: of the two we have, the one it prefers (highest
    q-value, then first named); Chinese for any ``zh`` (``zh-CN``, ``zh-TW``, ``zh-Hans``); English when it
    names neither, or nothing."""
    best, best_q = DEFAULT, 0.0
    for part in (accept_language or "").split(",")[:50]:
        tag, *params = part.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        primary = re.split(r"[-_]", tag.strip().lower(), maxsplit=1)[0]
        language: Language | None = ZH if primary == "zh" else EN if primary == "en" else None
        if language is not None and 0 < q <= 1 and q > best_q:
            best, best_q = language, q
    return best


# --- Entries every service may use ----------------------------------------------------------------
VERBATIM = Text("verbatim", en="{text}", zh="{text}")


def verbatim(text: str) -> Said:
    """Words from outside the catalogue (a message from an older service, a library's), the same in every
    language."""
    return VERBATIM(text=text)


_AND_TWO = Text("list.and", en="{first} and {last}", zh="{first}、{last}")
_OR_TWO = Text("list.or", en="{first} or {last}", zh="{first}、{last}")
_MORE = Text("list.more", en="{first}, {rest}", zh="{first}、{rest}")


def listing(items: Iterable[Any], conjunction: Literal["and", "or"] = "and") -> Said:
    """``A, B and C`` (or ``A, B or C``) in English, ``A、B、C`` in Chinese."""
    names = list(items)
    if len(names) < 2:
        return verbatim(str(names[0]) if names else "")
    said = (_AND_TWO if conjunction == "and" else _OR_TWO)(first=names[-2], last=names[-1])
    for name in reversed(names[:-2]):
        said = _MORE(first=name, rest=said)
    return said


_STATUS = {
    "queued": Text("status.queued", en="queued", zh="排队中"),
    "processing": Text("status.processing", en="processing", zh="处理中"),
    "completed": Text("status.completed", en="completed", zh="已完成"),
    "failed": Text("status.failed", en="failed", zh="已失败"),
}


def status_word(status: str) -> Said:
    """A task's status (``bus.schemas.STATUSES``) as a word in a sentence."""
    text = _STATUS.get(status)
    return text() if text is not None else verbatim(status)


_CAPABILITY = {
    "upscale": Text("capability.upscale", en="super-resolution (×2/×4)", zh="超分辨率放大（×2/×4）"),
    "faces": Text("capability.faces", en="face restoration", zh="人像修复"),
}
_CAPABILITY_TITLE = {
    "upscale": Text("capability.upscale.title", en="Super-resolution (×2/×4)", zh="超分辨率放大（×2/×4）"),
    "faces": Text("capability.faces.title", en="Face restoration", zh="人像修复"),
}


def capability_name(capability: str, *, title: bool = False) -> Said:
    """A capability (``bus.capabilities``) as a person calls it; ``title``: at the start of a sentence."""
    text = (_CAPABILITY_TITLE if title else _CAPABILITY).get(capability)
    return text() if text is not None else verbatim(capability.capitalize() if title else capability)


# --- A task's record and progress (written by the edge and the enhancer, shown by the edge) ---------------
TASK_QUEUED = Text("task.queued", en="Queued: waiting for a free enhancer", zh="排队中：等待空闲的处理服务器")
TASK_PROCESSING = Text("task.processing", en="Processing", zh="处理中")
TASK_COMPLETED = Text("task.completed", en="Enhancement completed", zh="增强完成")
TASK_FAILED = Text("task.failed", en="Enhancement failed", zh="增强失败")
TASK_CANCELLED = Text("task.cancelled", en="Cancelled", zh="已取消")
TASK_CANCELLED_BY_USER = Text("task.cancelled_by_user", en="Cancelled by the user before it started.",
                              zh="已在开始处理前由用户取消。")
TASK_RETRYING = Text("task.retrying", en="{reason} Retrying (attempt {attempt} of {attempts}).",
                     zh="{reason}正在重试（第 {attempt} 次，共 {attempts} 次）。")
TASK_GAVE_UP = Text("task.gave_up", en="{reason} Gave up after {attempts} attempts.",
                    zh="{reason}已尝试 {attempts} 次，不再重试。")
TASK_WORKER_KEPT_STOPPING = Text(
    "task.worker_kept_stopping",
    en="The task was attempted {attempts} times and its worker stopped each time (crash or restart); giving up.",
    zh="这个任务已尝试 {attempts} 次，每次处理服务器都中途停止（崩溃或重启），已放弃处理。")
TASK_DEADLINE = Text("task.deadline",
                     en="Enhancing this photo took longer than the {seconds:g}-second limit per attempt.",
                     zh="这张照片的处理时间超过了每次 {seconds:g} 秒的上限。")
TASK_SLOT_STUCK = Text("task.slot_stuck",
                       en="This enhancer's engine was stuck on an earlier photo that overran its time limit.",
                       zh="这台处理服务器的引擎卡在了之前一张超时的照片上。")
TASK_INPUT_TOO_LARGE = Text("task.input_too_large",
                            en="The input is larger than this worker accepts ({mb:g} MB); it was not read.",
                            zh="上传的文件超过了处理服务器可接受的大小（{mb:g} MB），未被读取。")
TASK_INPUT_MISSING = Text("task.input_missing",
                          en="The uploaded image is no longer available (expired or never uploaded).",
                          zh="上传的图片已不存在（已过期，或从未上传成功）。")
TASK_STORAGE_DOWN = Text("task.storage_down", en="Object storage is unavailable.", zh="文件存储暂时不可用。")
TASK_RESULT_NOT_STORED = Text("task.result_not_stored",
                              en="Object storage is unavailable; the result could not be stored.",
                              zh="文件存储暂时不可用，处理结果未能保存。")
TASK_CAPABILITY_MISSING = Text(
    "task.capability_missing",
    en="{capability} is not available on this service: the weights it needs ({weights}) are not installed "
       "(operators: run `photoenhance models fetch`).",
    zh="本服务暂不支持{capability}：所需的模型权重（{weights}）尚未安装"
       "（运维人员请运行 `photoenhance models fetch`）。")
TASK_ENGINE_CANNOT = Text("task.engine_cannot",
                          en="The {engine} engine cannot enhance at scale {scale} with quality {quality!r}.",
                          zh="{engine} 引擎不支持以 {scale} 倍、质量 {quality!r} 进行增强。")
TASK_INTERNAL_ERROR = Text(
    "task.internal_error",
    en="Enhancement failed because of an internal error ({kind}); the operators can find the details in the "
       "enhancer's log.",
    zh="内部错误（{kind}）导致增强失败，运维人员可以在处理服务器的日志中查看详情。")
TASK_OUT_OF_GPU_MEMORY = Text("task.out_of_gpu_memory",
                              en="Not enough GPU memory to process this image, even with {tile}-pixel tiles",
                              zh="GPU 显存不足，即使把图片切成 {tile} 像素的小块也无法处理")
TASK_MODEL_UNUSABLE = Text("task.model_unusable",
                           en="The enhancer's {model} model could not be loaded (its weights file is damaged); "
                              "please try another quality level while the operator replaces it",
                           zh="增强节点上的 {model} 模型无法加载（权重文件已损坏）；"
                              "请先换一个画质档位，等待管理员更换该文件")
TASK_OUT_OF_GPU_MEMORY_FACES = Text("task.out_of_gpu_memory_faces",
                                    en="Not enough GPU memory to restore the faces in this image, even one at a time",
                                    zh="GPU 显存不足，即使逐张处理也无法修复这张图片中的人脸")

#: What the progress bar says at each stage of the enhancer (``enhancer/progress.py``).
PROGRESS: dict[str, Text] = {
    "fetched": Text("progress.fetched", en="Image fetched", zh="已读取图片"),
    "decoded": Text("progress.decoded", en="Image decoded", zh="图片已解码"),
    "faces_detected": Text("progress.faces_detected", en="{done} face(s) detected", zh="检测到 {done} 张人脸"),
    "restoring": Text("progress.restoring", en="Restoring face {done}/{total}", zh="正在修复人脸 {done}/{total}"),
    "upscaling": Text("progress.upscaling", en="Upscaling tile {done}/{total}", zh="正在放大第 {done}/{total} 块"),
    "encoding": Text("progress.encoding", en="Encoding the result", zh="正在生成结果图片"),
    "stored": Text("progress.stored", en="Result stored", zh="结果已保存"),
}

# --- The enhancer's image checks (``enhancer/imaging.py``) --------------------------------------------------
IMAGE_TOO_MANY_PIXELS = Text("image.decode.too_many_pixels",
                             en="The image is {width}×{height} pixels ({megapixels} megapixels); the limit is "
                                "{limit} megapixels.",
                             zh="图片为 {width}×{height} 像素（{megapixels} 百万像素），"
                                "超过了 {limit} 百万像素的上限。")
IMAGE_FORMAT_NOT_SUPPORTED = Text("image.decode.format",
                                  en="{format} images are not supported; please upload {supported}.",
                                  zh="不支持 {format} 格式的图片，请上传 {supported} 格式。")
IMAGE_UNKNOWN_FORMAT = Text("image.decode.unknown_format",
                            en="This file is not an image in a supported format; please upload {supported}.",
                            zh="这个文件不是支持格式的图片，请上传 {supported} 格式。")
IMAGE_DAMAGED = Text("image.decode.damaged",
                     en="The image file is damaged or incomplete and cannot be read; please upload it again.",
                     zh="图片文件已损坏或不完整，无法读取，请重新上传。")
IMAGE_TOO_LARGE = Text("image.decode.too_large", en="The image is too large{size}; the limit is {limit} megapixels.",
                       zh="图片太大{size}，上限为 {limit} 百万像素。")
IMAGE_SIZE = Text("image.decode.size", en=" ({megapixels} megapixels)", zh="（{megapixels} 百万像素）")

# --- Billing's refusals, which the edge relays (``billing/``) -------------------------------------------------
ORDER_STATUS = {
    "PENDING": Text("order.pending", en="PENDING", zh="待支付"),
    "PAID": Text("order.paid", en="PAID", zh="已支付"),
    "CLOSED": Text("order.closed", en="CLOSED", zh="已关闭"),
    "REFUNDED": Text("order.refunded", en="REFUNDED", zh="已退款"),
}


def order_status(status: str) -> Said:
    """An order's status (``bus.billing.ORDER_STATUSES``) in a sentence."""
    text = ORDER_STATUS.get(status)
    return text() if text is not None else verbatim(status)


BILLING_SIGN_IN_FIRST = Text("billing.sign_in_first",
                             en="Sign in first: send 'Authorization: Bearer <token>' from /api/wechat/auth/openid.",
                             zh="请先登录：请求时带上 /api/wechat/auth/openid 返回的 'Authorization: Bearer <token>'。")
BILLING_SESSION_INVALID = Text("billing.session_invalid", en="The session token is not valid; sign in again.",
                               zh="登录凭证无效，请重新登录。")
BILLING_SESSION_EXPIRED = Text("billing.session_expired", en="The session has expired; sign in again.",
                               zh="登录已过期，请重新登录。")
BILLING_PAY_NOT_CONFIGURED = Text("billing.pay_not_configured", en="WeChat Pay is not configured on this server.",
                                  zh="此服务器尚未配置微信支付。")
BILLING_SIGN_IN_NOT_CONFIGURED = Text("billing.sign_in_not_configured",
                                      en="Mini-program sign-in is not configured on this server.",
                                      zh="此服务器尚未配置小程序登录。")
BILLING_SEND_CODE = Text("billing.send_code", en='Send the code from wx.login as {{"code": ...}}.',
                         zh='请以 {{"code": ...}} 的形式发送 wx.login 得到的 code。')
BILLING_NO_SUCH_ORDER = Text("billing.no_such_order", en="No such order.", zh="订单不存在。")
BILLING_REFUND_NOT_PAID = Text("billing.refund_not_paid",
                               en="The order is {status}; only a paid order can be refunded.",
                               zh="订单状态为“{status}”，只有已支付的订单才能退款。")
BILLING_REFUND_RECORDING = Text("billing.refund_recording",
                                en="The refund is being recorded; please ask again in a moment.",
                                zh="退款正在登记中，请稍后再查询。")
BILLING_CLOSE_NOT_PENDING = Text("billing.close_not_pending",
                                 en="The order is {status}; only a pending order can be closed.",
                                 zh="订单状态为“{status}”，只有待支付的订单才能关闭。")
BILLING_TASK_NOT_YOURS = Text("billing.task_not_yours", en="This task belongs to someone else.",
                              zh="这个任务属于其他用户。")
BILLING_NO_USES_LEFT = Text("billing.no_uses_left",
                            en="No enhancements left: there are no credits; buy a package to continue.",
                            zh="没有可用次数了：点数已用完，请购买套餐后继续。")
BILLING_NO_USES_LEFT_TODAY = Text(
    "billing.no_uses_left_today",
    en="No enhancements left: today's {free} free uses are spent and there are no credits; buy a package to continue.",
    zh="没有可用次数了：今天的 {free} 次免费次数已用完，点数也已用完，请购买套餐后继续。")
BILLING_VISITOR_QUOTA = Text("billing.visitor_quota",
                             en="Today's {limit} free enhancements for visitors are used up; come back tomorrow, "
                                "or use the mini-program to buy more.",
                             zh="今天的 {limit} 次访客免费增强已用完；请明天再来，或在小程序中购买更多次数。")
BILLING_NO_USE_RESERVED = Text("billing.no_use_reserved", en="No use is reserved for this task.",
                               zh="这个任务没有预留使用次数。")
BILLING_UNKNOWN_PRODUCT = Text("billing.unknown_product", en="Unknown product {product!r}; choose one of: {known}.",
                               zh="没有商品 {product!r}，可选的商品：{known}。")
BILLING_NOT_A_PRICE = Text("billing.not_a_price",
                           en="The amount {amount} fen is not the price of a product; the prices are: {prices}.",
                           zh="金额 {amount} 分不是任何商品的价格；商品价格为：{prices}。")
BILLING_ORDER_MISMATCH = Text("billing.order_mismatch", en="WeChat Pay's record of this order does not match ours.",
                              zh="微信支付的订单记录与我们的不一致。")
BILLING_MALFORMED = Text("billing.malformed", en="Malformed request: {detail}", zh="请求格式错误：{detail}")
BILLING_FAILED = Text("billing.failed", en="Billing failed unexpectedly; the details are in its log.",
                      zh="计费服务意外出错，详情见其日志。")
BILLING_RESTARTING = Text("billing.restarting", en="Billing is restarting; please try again in a moment.",
                          zh="计费服务正在重启，请稍后再试。")
WECHAT_LOGIN_CODE_INVALID = Text("wechat.login_code_invalid", en="The login code is not valid; call wx.login again.",
                                 zh="登录 code 无效，请重新调用 wx.login。")
WECHAT_LOGIN_CODE_USED = Text("wechat.login_code_used", en="The login code was already used; call wx.login again.",
                              zh="登录 code 已被使用过，请重新调用 wx.login。")
WECHAT_TOO_MANY_SIGN_INS = Text("wechat.too_many_sign_ins", en="Too many sign-ins right now; try again in a minute.",
                                zh="当前登录请求过多，请一分钟后再试。")
WECHAT_BUSY = Text("wechat.busy", en="WeChat is busy; try again in a moment.", zh="微信服务繁忙，请稍后再试。")
WECHAT_SIGN_IN_REFUSED = Text("wechat.sign_in_refused", en="WeChat refused the sign-in.", zh="微信拒绝了这次登录。")
WECHAT_SIGN_IN_UNREACHABLE = Text("wechat.sign_in_unreachable",
                                  en="WeChat could not be reached to sign in; try again in a moment.",
                                  zh="暂时连不上微信，无法登录，请稍后再试。")
WECHAT_SIGN_IN_UNREADABLE = Text("wechat.sign_in_unreadable",
                                 en="WeChat answered the sign-in with something unreadable.",
                                 zh="微信返回的登录结果无法识别。")
WECHAT_NO_OPENID = Text("wechat.no_openid", en="WeChat's sign-in answer has no valid openid.",
                        zh="微信返回的登录结果中没有有效的 openid。")
WECHAT_PREPAY_REFUSED = Text("wechat.prepay_refused", en="WeChat Pay refused to create the payment.",
                             zh="微信支付拒绝创建这笔支付。")
WECHAT_ORDER_STATE_UNKNOWN = Text("wechat.order_state_unknown", en="WeChat Pay could not tell the order's state.",
                                  zh="微信支付无法确认订单状态。")
WECHAT_PAID_BEFORE_CLOSE = Text("wechat.paid_before_close", en="The order was paid before it could be closed.",
                                zh="订单在关闭前已经支付。")
WECHAT_CLOSE_REFUSED = Text("wechat.close_refused", en="WeChat Pay refused to close the order.",
                            zh="微信支付拒绝关闭这笔订单。")
WECHAT_REFUND_REFUSED = Text("wechat.refund_refused", en="WeChat Pay refused the refund: {detail}",
                             zh="微信支付拒绝退款：{detail}")
WECHAT_REFUND_STATE_UNKNOWN = Text("wechat.refund_state_unknown", en="WeChat Pay could not tell the refund's state.",
                                   zh="微信支付无法确认退款状态。")
WECHAT_PAY_UNREACHABLE = Text("wechat.pay_unreachable", en="WeChat Pay could not be reached; try again in a moment.",
                              zh="暂时连不上微信支付，请稍后再试。")
WECHAT_PAY_UNVERIFIED = Text("wechat.pay_unverified", en="WeChat Pay's answer could not be verified.",
                             zh="微信支付的应答未能通过验证。")

# --- The options of a job (``bus.schemas.EnhanceOptions``), refused at the edge --------------------------------
OPTION_SCALE = Text("option.scale", en="scale must be 2 or 4, not {value!r}",
                    zh="scale 只能是 2 或 4，不能是 {value!r}")
OPTION_QUALITY = Text("option.quality", en="quality_level must be one of fast, medium, high, not {value!r}",
                      zh="quality_level 只能是 fast、medium 或 high，不能是 {value!r}")
OPTION_TILE_SIZE = Text("option.tile_size",
                        en="tile_size must be 0 (no tiling) or between 32 and 2048, not {value!r}",
                        zh="tile_size 只能是 0（不分块）或 32 到 2048 之间的数，不能是 {value!r}")
OPTION_FACE_ENHANCE = Text("option.face_enhance", en="face_enhance must be true, false or auto, not {value!r}",
                           zh="face_enhance 只能是 true、false 或 auto，不能是 {value!r}")
OPTION_FACE_STRENGTH = Text("option.face_strength",
                            en="face_strength must be a number from 0 (the original face) to 1 (fully restored), "
                               "not {value!r}",
                            zh="face_strength 只能是 0（保留原来的脸）到 1（完全修复）之间的数，不能是 {value!r}")
OPTION_OUTPUT_FORMAT = Text("option.output_format",
                            en="output_format must be one of auto, jpeg, png, webp, avif, not {value!r}",
                            zh="output_format 只能是 auto、jpeg、png、webp 或 avif，不能是 {value!r}")
OPTION_OUTPUT_QUALITY = Text("option.output_quality",
                             en="output_quality must be a whole number from 1 to 100, not {value!r}",
                             zh="output_quality 只能是 1 到 100 之间的整数，不能是 {value!r}")

# --- The size of a result (``bus.output_size``): said in the task's status, or a refusal -----------------------
RESULT_REDUCED_PIXELS = Text(
    "result.reduced_pixels",
    en="Enlarged ×{scale:g} instead of ×{asked} to stay under the {megapixels:g}-megapixel limit on results.",
    zh="为不超过结果 {megapixels:g} 百万像素的上限，放大了 ×{scale:g}，而不是 ×{asked}。")
RESULT_REDUCED_SIDE = Text(
    "result.reduced_side",
    en="Enlarged ×{scale:g} instead of ×{asked} to stay within the {side}-pixel width and height that {format} allows.",
    zh="{format} 图片的宽和高最多 {side} 像素，因此放大了 ×{scale:g}，而不是 ×{asked}。")
RESULT_TOO_LARGE_PIXELS = Text(
    "result.too_large_pixels",
    en="This photo ({width}×{height} pixels) is larger than the {megapixels:g}-megapixel limit on results, even "
       "without enlarging it.",
    zh="这张照片（{width}×{height} 像素）即使不放大，也超过了结果 {megapixels:g} 百万像素的上限。")
RESULT_TOO_WIDE = Text(
    "result.too_wide",
    en="A {format} image can be at most {side} pixels wide or tall, and this photo is {length} pixels wide; "
       "choose another output format.",
    zh="{format} 图片的宽和高最多 {side} 像素，而这张照片宽 {length} 像素，请选择其他输出格式。")
RESULT_TOO_TALL = Text(
    "result.too_tall",
    en="A {format} image can be at most {side} pixels wide or tall, and this photo is {length} pixels tall; "
       "choose another output format.",
    zh="{format} 图片的宽和高最多 {side} 像素，而这张照片高 {length} 像素，请选择其他输出格式。")
