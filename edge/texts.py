"""The edge's own sentences (its refusals), in English and Simplified Chinese, and each request's language.

The catalogue's machinery and the sentences other services say too are ``bus.texts``; every answer the edge
sends is put into words here, at the last moment, in the language of the request that gets it
(:func:`request_language`): a ``lang`` query parameter (``zh``/``en``: what a browser's ``EventSource``,
which cannot set headers, sends), else the ``Accept-Language`` header; English when neither names Chinese.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Scope

from bus.texts import Language, Text, negotiate

#: The query parameter that chooses the language over ``Accept-Language``.
LANG_PARAM = "lang"


def request_language(request: Request) -> Language:
    """The language this request's answer is written in."""
    chosen = request.query_params.get(LANG_PARAM)
    return negotiate(chosen if chosen else request.headers.get("accept-language"))


def scope_language(scope: Scope) -> Language:
    """:func:`request_language` for a middleware, which has only the ASGI scope."""
    return request_language(Request(scope))


LanguageDep = Annotated[Language, Depends(request_language)]

# --- Any route ------------------------------------------------------------------------------------------------
NO_SUCH_ENDPOINT = Text("http.not_found", en="There is no such API endpoint.", zh="没有这个 API 接口。")
METHOD_NOT_ALLOWED = Text("http.method_not_allowed", en="This HTTP method is not allowed here.",
                          zh="这个接口不支持此 HTTP 方法。")
INVALID_REQUEST = Text("http.invalid", en="Invalid request — {problems}.", zh="请求无效：{problems}。")
INVALID_AT = Text("http.invalid.at", en="{where}: {problem}", zh="{where}：{problem}")
INVALID_MORE = Text("http.invalid.more", en="{first}; {rest}", zh="{first}；{rest}")
BUS_DOWN = Text("http.bus_down", en="The service's message bus is briefly unavailable; please retry in a few seconds.",
                zh="服务内部通信暂时中断，请过几秒再试。")
FILE_GONE = Text("http.file_gone", en="The file is no longer available.", zh="该文件已不存在。")
STORAGE_DOWN = Text("http.storage_down", en="Storage is unavailable right now; please try again in a moment.",
                    zh="文件存储暂时不可用，请稍后再试。")
INTERNAL_ERROR = Text("http.internal",
                      en="Internal server error; the operators can find the details in the edge's log.",
                      zh="服务器内部错误，运维人员可以在网关日志中查看详情。")
TOO_MANY_REQUESTS = Text("http.rate_limited", en="Too many requests; please wait {seconds} seconds and try again.",
                         zh="请求过于频繁，请等待 {seconds} 秒后再试。")
TOO_MANY_OPEN_HERE = Text("http.pool.client",
                          en="Too many {what} are open from your address ({limit} at most); close one or try again "
                             "in {seconds} seconds.",
                          zh="你的地址同时打开的{what}太多（最多 {limit} 个），请关闭一些，或 {seconds} 秒后再试。")
TOO_MANY_OPEN = Text("http.pool.total",
                     en="The service has too many {what} open right now; please try again in {seconds} seconds.",
                     zh="服务当前打开的{what}太多，请 {seconds} 秒后再试。")
POOL_STREAMS = Text("http.pool.streams", en="event streams and result waits", zh="事件流和结果等待")
POOL_DOWNLOADS = Text("http.pool.downloads", en="downloads", zh="下载")
POOL_READS = Text("http.pool.reads", en="status requests", zh="状态查询")
POOL_UPLOADS = Text("http.pool.uploads", en="uploads", zh="上传")
ADMIN_DISABLED = Text("admin.disabled", en="Admin routes are disabled: set ADMIN_TOKEN on the edge to enable them.",
                      zh="管理接口未启用：请在网关上设置 ADMIN_TOKEN 后再使用。")
ADMIN_TOKEN_NEEDED = Text("admin.token_needed",
                          en="This route needs an admin token: send 'Authorization: Bearer <token>'.",
                          zh="这个接口需要管理员令牌：请带上 'Authorization: Bearer <token>'。")
ADMIN_TOKEN_WRONG = Text("admin.token_wrong", en="The admin token is wrong.", zh="管理员令牌不正确。")

# --- Uploads ----------------------------------------------------------------------------------------------------
UPLOAD_TOO_LARGE = Text("upload.too_large", en="The upload is too large. The maximum size is {mb:g} MB.",
                        zh="上传的文件太大，最大 {mb:g} MB。")
UPLOAD_STALLED = Text("upload.stalled",
                      en="The upload stalled: no data arrived for {seconds:g} seconds. Please try again.",
                      zh="上传中断：已经 {seconds:g} 秒没有收到数据，请重试。")
UPLOAD_EMPTY = Text("upload.empty", en="The uploaded file is empty.", zh="上传的文件是空的。")
UPLOAD_NO_FILE = Text("upload.no_file",
                      en="No file was uploaded: send the photo in a multipart form field named 'file'.",
                      zh="没有收到文件：请把照片放在名为 'file' 的 multipart 表单字段中上传。")
UPLOAD_FORMAT = Text("image.format", en="Images in {format} format are not supported. Supported formats: {supported}.",
                     zh="不支持 {format} 格式的图片。支持的格式：{supported}。")
UPLOAD_FORMAT_UNNAMED = Text("image.format.unnamed",
                             en="Images in this format are not supported. Supported formats: {supported}.",
                             zh="不支持这种格式的图片。支持的格式：{supported}。")
UPLOAD_NO_PIXELS = Text("image.no_pixels", en="The image has no pixels.", zh="这张图片没有任何像素。")
UPLOAD_TOO_MANY_PIXELS = Text("image.too_many_pixels",
                              en="The image is {width}×{height} pixels ({megapixels:.1f} megapixels); the limit is "
                                 "{limit:g} megapixels.",
                              zh="图片为 {width}×{height} 像素（{megapixels:.1f} 百万像素），"
                                 "超过了 {limit:g} 百万像素的上限。")
UPLOAD_NOT_AN_IMAGE = Text("image.unreadable",
                           en="The file is not an image we can read. Supported formats: {supported}.",
                           zh="这个文件不是我们能读取的图片。支持的格式：{supported}。")
UPLOAD_DAMAGED = Text("image.damaged", en="The image file is damaged or incomplete (it could not be decoded).",
                      zh="图片文件已损坏或不完整，无法解码。")
UPLOAD_BOMB = Text("image.bomb",
                   en="The image is too large (over {over:.0f} megapixels); the limit is {limit:g} megapixels.",
                   zh="图片太大（超过 {over:.0f} 百万像素），上限为 {limit:g} 百万像素。")
OPTION_WHOLE_NUMBER = Text("option.whole_number", en="{name} must be a whole number.", zh="{name} 必须是整数。")
OPTION_WHOLE_NUMBER_NOT = Text("option.whole_number_not", en="{name} must be a whole number, not {value!r}.",
                               zh="{name} 必须是整数，不能是 {value!r}。")
OPTION_TRUE_FALSE_AUTO = Text("option.true_false_auto", en="{name} must be true, false or auto, not {value!r}.",
                              zh="{name} 只能是 true、false 或 auto，不能是 {value!r}。")
OPTION_NUMBER_NOT = Text("option.number_not", en="{name} must be a number, not {value!r}.",
                         zh="{name} 必须是数字，不能是 {value!r}。")
OPTION_INVALID = Text("option.invalid", en="{problem}.", zh="{problem}。")
IDEMPOTENCY_KEY_BAD = Text("idempotency.bad_key", en="The {header} header must be 1 to 200 visible ASCII characters.",
                           zh="{header} 请求头必须是 1 到 200 个可见 ASCII 字符。")
IDEMPOTENCY_CONTENDED = Text("idempotency.contended",
                             en="Other requests with this {header} keep arriving at the same moment; try again.",
                             zh="带有同一个 {header} 的其他请求正在同时到达，请重试。")
IDEMPOTENCY_IN_FLIGHT = Text("idempotency.in_flight",
                             en="An earlier request with this Idempotency-Key is still being handled; try again in a "
                                "moment.",
                             zh="带有这个 Idempotency-Key 的上一个请求仍在处理中，请稍后再试。")
PRESIGNED_MISSING_KEY = Text("presigned.missing_key",
                             en="Missing file_key: first upload the photo with a URL from "
                                "/api/v1/upload/presigned-url.",
                             zh="缺少 file_key：请先用 /api/v1/upload/presigned-url 返回的地址上传照片。")
PRESIGNED_FOREIGN_KEY = Text("presigned.foreign_key",
                             en="This file_key was not issued by /api/v1/upload/presigned-url.",
                             zh="这个 file_key 不是 /api/v1/upload/presigned-url 签发的。")
PRESIGNED_OVER_BOUND = Text("presigned.over_bound",
                            en="The upload is larger than the {bound} bytes this URL was issued for; it was deleted.",
                            zh="上传的文件超过了这个地址允许的 {bound} 字节，已被删除。")
PRESIGNED_NOTHING = Text("presigned.nothing", en="Nothing was uploaded under this file_key (or it has expired).",
                         zh="这个 file_key 下没有上传的文件（或已过期）。")
PRESIGNED_STILL_PROCESSING = Text("presigned.still_processing",
                                  en="Still processing after {seconds:g} s; poll /api/v1/status/{task_id}.",
                                  zh="已处理 {seconds:g} 秒仍未完成，请查询 /api/v1/status/{task_id}。")
PRESIGNED_FAILED = Text("presigned.failed", en="Enhancement failed.", zh="增强失败。")

# --- Enhancers on the bus ---------------------------------------------------------------------------------------
NO_ENHANCER = Text("dispatch.no_enhancer", en="No enhancer is available right now; please try again in a moment.",
                   zh="当前没有空闲的处理服务器，请稍后再试。")
FACES_UNAVAILABLE = Text("dispatch.faces_unavailable",
                         en="Face restoration is not available right now: no enhancer on the bus can restore faces "
                            "(operators: `photoenhance models fetch` installs the weights). Send face_enhance=auto or "
                            "false to enhance without it.",
                         zh="人像修复暂时不可用：当前没有能修复人像的处理服务器（运维人员可运行 "
                            "`photoenhance models fetch` 安装模型权重）。将 face_enhance 设为 auto 或 false，"
                            "即可不做人像修复直接增强。")
CAPABILITY_UNAVAILABLE = Text("dispatch.capability_unavailable",
                              en="No enhancer on the bus offers {capability} right now.",
                              zh="当前没有提供{capability}的处理服务器。")
BUSY = Text("dispatch.busy", en="The service is busy: {waiting} photos are already waiting. Please try again shortly.",
            zh="服务繁忙：已有 {waiting} 张照片在排队，请稍后再试。")

# Why a request that names no quality level gets the one it gets (``edge.options.default_quality``, /api/v1/info).
DEFAULT_QUALITY_CPU = Text("quality.default.cpu",
                           en="Every enhancer here runs on a CPU, without a graphics card: there Fast enlarges a "
                              "1-megapixel photo ×4 in half a minute or less, Medium takes about a minute and High "
                              "quality several minutes, so Fast is the default. Ask for another level and you get "
                              "it.",
                           zh="这里的处理服务器都只用 CPU，没有显卡：把一张 1 百万像素的照片放大 4 倍，"
                              "“快速”最多约半分钟，“中等”约一分钟，“高质量”要好几分钟，所以默认用“快速”。"
                              "选择其他档位照样可以。")
DEFAULT_QUALITY_GPU = Text("quality.default.gpu",
                           en="An enhancer with a graphics card (GPU) is serving, which enlarges a photo in High "
                              "quality within seconds, so High quality is the default.",
                           zh="有带显卡（GPU）的处理服务器在服务，“高质量”几秒内即可完成，所以默认用“高质量”。")
DEFAULT_QUALITY_NO_ENHANCER = Text("quality.default.none",
                                   en="No enhancer is serving right now; High quality is the default.",
                                   zh="当前没有处理服务器在服务；默认用“高质量”。")

# --- Tasks ------------------------------------------------------------------------------------------------------
TASK_ID_INVALID = Text("task.id_invalid", en="This is not a valid task id (expected 32 hexadecimal characters).",
                       zh="任务 ID 无效（应为 32 位十六进制字符）。")
TASK_NOT_FOUND = Text("task.not_found", en="Task not found. Tasks and their results are kept for {hours:g} hours.",
                      zh="找不到这个任务。任务及其结果只保留 {hours:g} 小时。")
TASK_NOT_CANCELLABLE = Text("task.not_cancellable", en="The task can no longer be cancelled: it is {status}.",
                            zh="任务已无法取消：当前状态为“{status}”。")
TASK_DELETE_WHILE_PROCESSING = Text("task.delete_while_processing",
                                    en="The photo is being enhanced right now; delete it once it has finished.",
                                    zh="这张照片正在处理中，请等处理完成后再删除。")
TASK_NOT_COMPLETED = Text("task.not_completed", en="Task not completed. Current status: {status}",
                          zh="任务尚未完成，当前状态：{status}")
TASK_RESULT_EXPIRED = Text("task.result_expired", en="The result has expired and is no longer available.",
                           zh="处理结果已过期，无法再下载。")

# --- Billing, as the edge reaches it ----------------------------------------------------------------------------
PAYMENTS_UNAVAILABLE = Text("billing.unavailable",
                            en="Payments are not available right now; please try again in a moment.",
                            zh="支付服务暂时不可用，请稍后再试。")
BILLING_TIMEOUT = Text("billing.timeout", en="Billing did not answer in time; please try again.",
                       zh="计费服务没有及时响应，请重试。")
BILLING_REFUSED = Text("billing.refused", en="Billing refused the request.", zh="计费服务拒绝了这个请求。")
BILLING_UNREADABLE = Text("billing.unreadable", en="Billing answered with something unreadable.",
                          zh="计费服务返回了无法识别的内容。")
USES_UNCHECKED = Text("billing.uses_unchecked",
                      en="Your remaining uses cannot be checked right now; please try again in a moment.",
                      zh="暂时无法查询你的剩余次数，请稍后再试。")
WECHAT_MISSING_PRODUCT = Text("wechat.missing_product", en="Missing product: name the product to buy.",
                              zh="缺少 product：请指明要购买的商品。")
WECHAT_MISSING_PRODUCT_OR_FEE = Text("wechat.missing_product_or_fee",
                                     en="Missing product (or openid and total_fee): name the product to buy.",
                                     zh="缺少 product（或 openid 和 total_fee）：请指明要购买的商品。")
WECHAT_NOT_AN_ORDER_NUMBER = Text("wechat.not_an_order_number", en="That is not an order number.",
                                  zh="这不是有效的订单号。")
