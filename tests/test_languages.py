"""Every sentence a person reads exists in Chinese and English, chosen by the request: in process, no servers.

The catalogue (``bus/texts.py``, ``edge/texts.py``) is checked whole; the edge is asked the same bad requests
with and without ``Accept-Language: zh``; a task's record and billing's refusals, written in one place and
read in another, are put into the reader's language (and an old record, without catalogue keys, still reads).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import nats.errors
import pytest
from fastapi import FastAPI
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

import billing.endpoints
import edge.errors  # its validation entries belong to the catalogue too
import edge.texts
from billing.errors import BillingError
from bus import texts
from bus.schemas import FAILED, QUEUED, EnhanceOptions, TaskProgress, TaskState
from bus.settings import NatsSettings, S3Settings, TaskSettings
from bus.texts import CATALOGUE, EN, ZH, Said, negotiate, placeholders, restore, stored
from edge import billing_client, dispatch
from edge.app import create_app
from edge.errors import ApiError
from edge.settings import EdgeSettings
from edge.views import task_status
from enhancer import progress, worker

ROOT = Path(__file__).resolve().parent.parent
CHINESE = {"Accept-Language": "zh-CN,zh;q=0.9"}
TASK = "a" * 32


def has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


# --- The catalogue ---------------------------------------------------------------------------------------------
def test_catalogue_entries_exist_in_both_languages_with_the_same_values() -> None:
    assert len(CATALOGUE) > 100
    for key, text in CATALOGUE.items():
        assert text.en.strip() and text.zh.strip(), key
        assert placeholders(text.en) == placeholders(text.zh), key
        assert "" not in placeholders(text.en), f"{key}: every value is named"


def test_chinese_entries_are_written_in_chinese() -> None:
    """Only words that are the same in both languages (list glue, a value said as it is, a product's order
    status code, a where-and-what pair, a full stop) may be without Chinese characters."""
    same = {"verbatim", "http.invalid.at", "http.invalid.more", "list.and", "list.or", "list.more", "option.invalid"}
    for key, text in CATALOGUE.items():
        if key not in same:
            assert has_chinese(text.zh), key


@pytest.mark.parametrize(("header", "language"), [
    ("zh-CN,zh;q=0.9", ZH), ("zh", ZH), ("zh-TW", ZH), ("zh-Hans-CN", ZH), ("zh_CN", ZH),
    ("en-US", EN), ("en-US,en;q=0.9,zh-CN;q=0.8", EN), ("zh-CN;q=0.8,en;q=0.9", EN),
    ("fr-FR,zh;q=0.5", ZH), ("fr-FR,de", EN), ("zh;q=0,en", EN), ("*", EN), ("", EN), (None, EN),
    ("zh;q=abc", EN), ("en;q=0.5, zh;q=0.5", EN), ("ja, zh-HK;q=0.7, en;q=0.3", ZH),
])
def test_the_language_is_the_preferred_one_we_have(header: str | None, language: str) -> None:
    assert negotiate(header) == language


def test_a_sentence_nests_sentences_and_travels_as_keys_and_values() -> None:
    said = texts.TASK_RETRYING(reason=texts.TASK_DEADLINE(seconds=0.5), attempt=2, attempts=3)
    assert str(said) == ("Enhancing this photo took longer than the 0.5-second limit per attempt. "
                         "Retrying (attempt 2 of 3).")
    assert said.render(ZH) == "这张照片的处理时间超过了每次 0.5 秒的上限。正在重试（第 2 次，共 3 次）。"
    assert Said.from_dict(json.loads(json.dumps(said.to_dict()))) == said
    assert str(texts.listing(["JPEG", "PNG", "WebP"])) == "JPEG, PNG and WebP"
    assert texts.listing(["JPEG", "PNG", "WebP"], "or").render(ZH) == "JPEG、PNG、WebP"


def test_a_stored_sentence_is_read_back_only_while_it_still_says_its_english() -> None:
    said = texts.TASK_INPUT_MISSING()
    assert restore(said.to_dict(), str(said)) == said
    assert restore(None, "Old words") == texts.verbatim("Old words")  # a record from before keys
    assert restore(said.to_dict(), "Other words") == texts.verbatim("Other words")  # changed since
    assert restore({"key": "from.a.newer.writer", "values": {}}, "New words") == texts.verbatim("New words")
    assert restore({"key": "task.not_found", "values": {}}, "x") == texts.verbatim("x")  # values missing
    assert restore(said.to_dict(), None) is None


# --- The edge, in process ----------------------------------------------------------------------------------------
def edge_app(**settings: Any) -> FastAPI:
    """The edge with no servers behind it: each request here is refused before a route needs one."""
    config = EdgeSettings(nats=NatsSettings(), s3=S3Settings(), tasks=TaskSettings(), **settings)
    app = create_app(config)
    app.state.resources = SimpleNamespace(settings=config)
    return app


async def ask(app: FastAPI, method: str, path: str, headers: dict[str, str] | None = None,
              **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        return await client.request(method, path, headers=headers, **kw)


BAD_REQUESTS = [
    ("no file", "POST", "/api/v1/enhance", {"data": {"scale": "2"}}, 400,
     "No file was uploaded: send the photo in a multipart form field named 'file'.",
     "没有收到文件：请把照片放在名为 'file' 的 multipart 表单字段中上传。"),
    ("bad option", "POST", "/api/v1/enhance?scale=3", {}, 422,
     "scale must be 2 or 4, not 3.", "scale 只能是 2 或 4，不能是 3。"),
    ("bad whole number", "POST", "/api/v1/enhance?tile_size=abc", {}, 422,
     "tile_size must be a whole number, not 'abc'.", "tile_size 必须是整数，不能是 'abc'。"),
    ("bad task id", "GET", "/api/v1/status/nope", {}, 400,
     "This is not a valid task id (expected 32 hexadecimal characters).", "任务 ID 无效（应为 32 位十六进制字符）。"),
    ("no such route", "GET", "/api/v1/nothing-here", {}, 404,
     "There is no such API endpoint.", "没有这个 API 接口。"),
    ("wrong method", "PUT", "/api/v1/status/" + TASK, {}, 405,
     "This HTTP method is not allowed here.", "这个接口不支持此 HTTP 方法。"),
    ("invalid body", "POST", "/api/v1/single-process-uploaded-image", {"json": {"scale": [1]}}, 422,
     "Invalid request — scale.int: Input should be a valid integer; scale.str: Input should be a valid string.",
     "请求无效：scale.int：应为整数；scale.str：应为字符串。"),
    ("missing key", "POST", "/api/v1/single-process-uploaded-image", {"json": {}}, 400,
     "Missing file_key: first upload the photo with a URL from /api/v1/upload/presigned-url.",
     "缺少 file_key：请先用 /api/v1/upload/presigned-url 返回的地址上传照片。"),
    ("admin route", "GET", "/webhook/servers", {}, 403,
     "Admin routes are disabled: set ADMIN_TOKEN on the edge to enable them.",
     "管理接口未启用：请在网关上设置 ADMIN_TOKEN 后再使用。"),
]


@pytest.mark.parametrize(("label", "method", "path", "kw", "status", "english", "chinese"), BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
async def test_the_same_bad_request_is_answered_in_the_language_asked_for(
        label: str, method: str, path: str, kw: dict, status: int, english: str, chinese: str) -> None:
    app = edge_app()
    for headers, expected in [(None, english), ({"Accept-Language": "en-US"}, english), (CHINESE, chinese),
                              ({"Accept-Language": "en-GB,en;q=0.9,zh;q=0.8"}, english)]:
        r = await ask(app, method, path, headers, **kw)
        assert (r.status_code, r.json()) == (status, {"error": expected}), (label, headers)


async def test_the_page_may_name_its_language_in_the_query() -> None:
    """A browser's EventSource cannot set headers: ``?lang=`` wins over ``Accept-Language``."""
    app = edge_app()
    r = await ask(app, "GET", "/api/v1/status/nope?lang=zh", {"Accept-Language": "en"})
    assert r.json()["error"] == "任务 ID 无效（应为 32 位十六进制字符）。"
    r = await ask(app, "GET", "/api/v1/status/nope?lang=en", CHINESE)
    assert r.json()["error"].startswith("This is not a valid task id")


async def test_refusals_of_the_middlewares_are_translated_too() -> None:
    app = edge_app(rate_account="1/60", max_upload_bytes=64 * 1024)
    await ask(app, "POST", "/api/wechat/auth/openid", json={"code": "x"})
    r = await ask(app, "POST", "/api/wechat/auth/openid", CHINESE, json={"code": "x"})
    assert r.status_code == 429 and r.json()["error"].startswith("请求过于频繁，请等待")
    r = await ask(app, "POST", "/api/v1/enhance", {**CHINESE, "content-type": "application/octet-stream"},
                  content=b"x" * (200 * 1024))
    assert (r.status_code, r.json()) == (413, {"error": "上传的文件太大，最大 0.0625 MB。"})


# --- A task's record, written by the enhancer and the edge, read in the reader's language ------------------------
def record(**changes: Any) -> TaskState:
    return TaskState(**{"task_id": TASK, "status": QUEUED, "created_at": 1.0, "updated_at": 1.0, "input_key": "k",
                        "input_name": "a.png", **changes})


def test_a_failed_task_is_described_in_the_readers_language() -> None:
    reason = texts.TASK_GAVE_UP(reason=texts.TASK_STORAGE_DOWN(), attempts=3)
    state = TaskState.decode(record(status=FAILED, stage=FAILED,
                                    **stored(message=texts.TASK_FAILED(), error=reason)).encode())
    english, chinese = task_status(state), task_status(state, language=ZH)
    assert (english.message, english.error) == ("Enhancement failed",
                                                "Object storage is unavailable. Gave up after 3 attempts.")
    assert (chinese.message, chinese.error) == ("增强失败", "文件存储暂时不可用。已尝试 3 次，不再重试。")
    assert state.error == english.error  # the English is stored beside the keys, for readers without them


def test_a_record_from_before_keys_reads_as_it_was() -> None:
    old = record(status=FAILED, stage=FAILED, message="Enhancement failed", error="Something the old worker said.")
    assert old.message_text is None
    assert task_status(old, language=ZH).error == "Something the old worker said."
    assert task_status(old, language=ZH).message == "Enhancement failed"


def test_the_records_sentences_are_written_with_their_keys() -> None:
    queued = record(**stored(message=texts.TASK_QUEUED()))
    assert task_status(queued, language=ZH).message == "排队中：等待空闲的处理服务器"
    done = queued.completed(_result(), at=2.0, processing_time=1.0)
    assert (done.message, task_status(done, language=ZH).message) == ("Enhancement completed", "增强完成")
    bar = TaskProgress(task_id=TASK, stage="upscaling", progress=0.5,
                       **stored(message=progress.message("upscaling", 3, 12)))
    assert bar.message == "Upscaling tile 3/12"
    assert restore(bar.message_text, bar.message).render(ZH) == "正在放大第 3/12 块"


def _result() -> Any:
    from bus.schemas import JobResult

    return JobResult(output_key="o", output_name="a_enhanced.png", output_content_type="image/png", output_size=1,
                     output_width=2, output_height=2, engine="x:y", faces=0)


def test_an_accepted_upload_is_answered_in_the_language_asked_for() -> None:
    from starlette.requests import Request

    from edge.routes import enhance

    def asking(headers: list[tuple[bytes, bytes]]) -> Request:
        return Request({"type": "http", "query_string": b"", "headers": headers})

    queued = record(**stored(message=texts.TASK_QUEUED()))
    chinese = enhance._accepted(asking([(b"accept-language", b"zh-CN,zh;q=0.9")]), queued)
    assert chinese.message == "排队中：等待空闲的处理服务器"
    assert enhance._accepted(asking([]), queued).message == "Queued: waiting for a free enhancer"


async def test_cancelling_records_both_sentences_in_both_languages() -> None:
    seen: list[TaskState] = []

    async def update(task_id: str, change: Any) -> TaskState:
        seen.append(change(record()))
        return seen[-1]

    res = SimpleNamespace(tasks=SimpleNamespace(update=update))
    cancelled = await dispatch.cancel(res, TASK)  # type: ignore[arg-type]
    assert cancelled is not None
    view = task_status(cancelled, language=ZH)
    assert (view.message, view.error) == ("已取消", "已在开始处理前由用户取消。")
    assert cancelled.error == "Cancelled by the user before it started."


def test_a_workers_failure_carries_what_it_says() -> None:
    job = SimpleNamespace(task_id=TASK)
    with pytest.raises(worker.PermanentFailure) as failed, worker._as_failure(job, "decoding"):  # type: ignore[arg-type]
        raise RuntimeError("boom")
    said = texts.said_of(failed.value)
    assert said.render(ZH).startswith("内部错误（RuntimeError）导致增强失败")
    assert str(failed.value).startswith("Enhancement failed because of an internal error (RuntimeError)")


def test_options_refused_by_the_shared_schema_say_so_in_both_languages() -> None:
    with pytest.raises(ValueError) as refused:
        EnhanceOptions(quality="ultra")
    assert str(refused.value) == "quality_level must be one of fast, medium, high, not 'ultra'"
    assert texts.said_of(refused.value).render(ZH) == "quality_level 只能是 fast、medium 或 high，不能是 'ultra'"


# --- Billing's refusals, relayed by the edge ----------------------------------------------------------------------
class Replying:
    """A NATS client whose every request gets ``reply`` (or raises it)."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    async def request(self, *args: Any, **kw: Any) -> Any:
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


class Responder:
    """A ``nats.micro`` request that keeps the error it is answered with."""

    def __init__(self) -> None:
        self.sent: dict[str, Any] = {}

    async def respond_error(self, code: str, description: str, data: bytes = b"", headers: Any = None) -> None:
        self.sent = {"code": code, "description": description, "data": data}


async def refusal_at_the_edge(sent: dict[str, Any]) -> ApiError:
    headers = {ERROR_CODE_HEADER: sent["code"], ERROR_HEADER: sent["description"]}
    res = SimpleNamespace(nc=Replying(SimpleNamespace(headers=headers, data=sent["data"])))
    with pytest.raises(ApiError) as refused:
        await billing_client.ask(res, "pe.x", record(), TaskState)  # type: ignore[arg-type]
    return refused.value


async def test_billings_refusal_reaches_the_person_in_their_language() -> None:
    responder = Responder()
    await billing.endpoints._refuse(responder, 402, BillingError(402, texts.BILLING_VISITOR_QUOTA(limit=5)).said)
    refused = await refusal_at_the_edge(responder.sent)
    assert refused.status == 402
    assert refused.message == ("Today's 5 free enhancements for visitors are used up; come back tomorrow, "
                               "or use the mini-program to buy more.")
    assert texts.render(refused.said, ZH) == "今天的 5 次访客免费增强已用完；请明天再来，或在小程序中购买更多次数。"


async def test_an_older_billings_refusal_is_relayed_as_it_is() -> None:
    refused = await refusal_at_the_edge({"code": "409", "description": "Old words.", "data": b""})
    assert (refused.status, texts.render(refused.said, ZH)) == (409, "Old words.")


async def test_billing_away_is_said_in_chinese() -> None:
    res = SimpleNamespace(nc=Replying(nats.errors.NoRespondersError()))
    with pytest.raises(ApiError) as refused:
        await billing_client.ask(res, "pe.x", record(), TaskState)  # type: ignore[arg-type]
    assert texts.render(refused.value.said, ZH) == "支付服务暂时不可用，请稍后再试。"


# --- No sentence is written outside the catalogue -------------------------------------------------------------
#: Exceptions whose argument is what a person is told; ``NotifyRejected`` is read by WeChat's servers.
SAID_BY = {"ApiError": 1, "BillingError": 1, "WeChatError": 1, "PermanentFailure": 0, "Transient": 0,
           "DeadlineExceeded": 0, "SlotRetired": 0, "ImageError": 0, "EngineError": 0}


#: Errors only an operator reads, at start-up (no GPU, no such engine, weights missing): English.
OPERATORS = ("'A GPU was requested", "f'Unknown engine", "f'Face restoration needs", "f'No engine could start")


@pytest.mark.parametrize("service", ["edge", "billing", "enhancer"])
def test_refusals_name_catalogue_entries_not_literal_sentences(service: str) -> None:
    literal: list[str] = []
    for path in (ROOT / service).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SAID_BY:
                position = SAID_BY[node.func.id]
                arg = node.args[position] if len(node.args) > position else None
                if isinstance(arg, ast.Constant | ast.JoinedStr) and not ast.unparse(arg).startswith(OPERATORS):
                    literal.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not literal, f"sentences outside the catalogue (bus/texts.py, edge/texts.py): {literal}"


def test_the_edge_texts_module_is_the_edges_catalogue() -> None:
    assert edge.texts.NO_SUCH_ENDPOINT.key in CATALOGUE
