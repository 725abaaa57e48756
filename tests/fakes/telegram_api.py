"""A fake Telegram Bot API server that the real python-telegram-bot client talks to over HTTP.

It runs aiohttp on a loopback port in a background thread, so tests stay synchronous while the
bot under test runs in another process (or another event loop) pointed at ``FakeTelegram.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

BOT_USER: dict[str, Any] = {
    "id": 1000, "is_bot": True, "first_name": "Rigwatch", "username": "rigwatch_bot",
    "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False,
    "can_connect_to_business": False, "has_main_web_app": False,
}
# Telegram puts only the basic fields in a message's "from"; the capability flags are getMe-only.
BOT_FROM = {k: BOT_USER[k] for k in ("id", "is_bot", "first_name", "username")}
# Parameters Telegram treats as strings even when they look like JSON ("123", "true", "{...}").
STRING_PARAMS = {
    "text", "caption", "parse_mode", "callback_query_id", "url", "inline_message_id", "action",
    "language_code", "secret_token", "ip_address", "description", "short_description", "name",
    "title", "emoji", "business_connection_id", "message_effect_id", "query", "photo", "document",
}
METHODS = [
    "getMe", "getUpdates", "deleteWebhook", "setWebhook", "getWebhookInfo", "setMyCommands",
    "getMyCommands", "deleteMyCommands", "sendMessage", "sendPhoto", "sendDocument", "editMessageText",
    "editMessageReplyMarkup",
    "answerCallbackQuery", "sendChatAction", "close", "logOut",
]
CANONICAL = {name.lower(): name for name in METHODS}
CAPTION_LIMIT = 1024
PHOTO_LIMIT_BYTES = 10 * 1024 * 1024
DOCUMENT_LIMIT_BYTES = 50 * 1024 * 1024  # what a bot may upload
# The methods Telegram counts against a group's flood limit (about 20 messages a minute per group).
GROUP_LIMITED = {"sendMessage", "sendPhoto", "sendDocument", "editMessageText", "editMessageReplyMarkup"}
# A client that paces itself takes its tokens when it decides to send; its requests reach the server a
# little later and not all equally late. The limit lets a call through that would be within it this much
# later, so pacing is never refused for network jitter, yet the long-run rate stays the limit.
GROUP_LIMIT_SLACK_S = 1.0
# Telegram's General topic of a forum: its messages carry no message_thread_id, and no topic gets this id.
GENERAL_TOPIC = 1
TOPIC_ICON_COLOR = 7322096  # the first of the colours Telegram offers for a new topic


class ApiError(Exception):
    """A Telegram-style error answer: HTTP status == error_code, plus description/parameters."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters

    def body(self) -> dict[str, Any]:
        """The JSON body Telegram would send."""
        body: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


@dataclass
class Call:
    """One request the bot made; ``status``/``result`` are what the fake answered."""

    method: str
    params: dict[str, Any]
    time: float
    status: int = 200
    result: Any = None


@dataclass
class _Topic:
    """A forum topic: its id is the message_id of ``root``, the service message that created it."""

    name: str
    root: dict[str, Any]
    closed: bool = False


@dataclass
class _State:
    """Everything mutable, guarded by FakeTelegram._lock."""

    calls: list[Call] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)  # the bot's
    inbound: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)  # users', for replies
    last_message_id: dict[int, int] = field(default_factory=dict)
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, list[ApiError]] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)
    callback_ids: set[str] = field(default_factory=set)
    photos: dict[str, dict[str, Any]] = field(default_factory=dict)  # file_id -> its PhotoSize
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)  # file_id -> its Document
    commands: dict[str, list[Any]] = field(default_factory=dict)
    allowed_updates: list[str] = field(default_factory=list)
    webhook_url: str = ""
    forums: dict[int, dict[int, _Topic]] = field(default_factory=dict)  # chat_id -> thread_id -> topic
    group_limit: float = 0.0  # messages a minute per group chat; 0: unlimited
    buckets: dict[int, tuple[float, float]] = field(default_factory=dict)  # chat_id -> (tokens, monotonic)
    next_update_id: int = 1
    next_callback_id: int = 1
    down: bool = False
    private_needs_start: bool = False  # a private chat takes the bot's messages only once its user wrote
    blocked: set[int] = field(default_factory=set)  # users who blocked the bot


def decode_value(key: str, value: Any) -> Any:
    """Undo PTB's encoding: non-string values arrive as JSON text, files as multipart parts (kept whole, so
    tests can look at what was sent)."""
    if isinstance(value, web.FileField):
        data = value.file.read()
        return {"filename": value.filename, "content_type": value.content_type, "size": len(data), "data": data}
    if key in STRING_PARAMS or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # e.g. chat_id="@channel"


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG, from its header; None for anything Telegram could not process."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8"):
        index = 2
        while index + 9 < len(data) and data[index] == 0xFF:
            marker, length = data[index + 1], int.from_bytes(data[index + 2:index + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
                height = int.from_bytes(data[index + 5:index + 7], "big")
                return int.from_bytes(data[index + 7:index + 9], "big"), height
            index += 2 + length
    return None


def chat_type(chat_id: int) -> str:
    """Telegram's id convention: users > 0, supergroups -100..., basic groups other negatives."""
    if chat_id > 0:
        return "private"
    return "supergroup" if str(chat_id).startswith("-100") else "group"


def in_topic(message: dict[str, Any], thread_id: int | None) -> bool:
    """Whether a message is in that topic; None matches any, GENERAL_TOPIC those outside every topic."""
    if thread_id is None:
        return True
    if not message.get("is_topic_message"):
        return thread_id == GENERAL_TOPIC
    return message.get("message_thread_id") == thread_id


def command_entities(text: str) -> list[dict[str, Any]]:
    """The bot_command entity Telegram attaches to a leading /command (length in UTF-16 units)."""
    if not text.startswith("/"):
        return []
    command = text.split(maxsplit=1)[0]
    return [{"type": "bot_command", "offset": 0, "length": len(command.encode("utf-16-le")) // 2}]


class FakeTelegram:
    """The fake Bot API server; start()/stop() or use as a context manager.

    ``group_limit_per_minute`` turns on Telegram's flood limit for group chats (see limit_groups).
    """

    def __init__(self, token: str = "123456:TEST-token", group_limit_per_minute: float | None = None) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._state = _State(group_limit=group_limit_per_minute or 0.0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self._port = 0

    @property
    def url(self) -> str:
        """Root URL; the bot uses f"{url}/bot" as base_url."""
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> Self:
        """Start the server thread and block until it listens."""
        ready, self._closing = threading.Event(), False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fake-telegram", daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self._port:
            raise RuntimeError("fake Telegram server did not start")
        return self

    def stop(self) -> None:
        """Release long-pollers, shut the server down and join the thread."""
        if not self._loop or not self._thread:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        """Thread body: own event loop, serve until stopped."""
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            ready.set()  # start() checks the port, so a failed bind surfaces there
        self._loop.run_forever()

    async def _serve(self) -> None:
        """Bind the aiohttp app to an ephemeral port."""
        self._wakeup = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)  # room for document uploads
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        # shutdown_timeout is short because stop() already released every long-poll.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        self._closing = True
        self._wake()
        if self._runner:
            await self._runner.cleanup()

    def _wake(self) -> None:
        """Runs on the server loop: release every getUpdates waiting on the current event."""
        if self._wakeup:
            self._wakeup.set()
            self._wakeup = asyncio.Event()

    def _notify(self) -> None:
        """Thread-safe wake-up of long-pollers."""
        if self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._wake)

    async def _handle(self, request: web.Request) -> web.Response:
        """Decode, authenticate, dispatch, record."""
        started = time.time()
        raw = request.match_info["method"]
        method = CANONICAL.get(raw.lower(), raw)
        form = {**request.query, **(await request.post())}
        params = {key: decode_value(key, value) for key, value in form.items()}
        status, result = 200, None
        try:
            result = await self._dispatch(request.match_info["token"], method, params)
            body: dict[str, Any] = {"ok": True, "result": result}
        except ApiError as err:
            status, body = err.code, err.body()
        with self._lock:
            self._state.calls.append(Call(method, params, started, status, result))
        return web.json_response(body, status=status)

    async def _dispatch(self, token: str, method: str, params: dict[str, Any]) -> Any:
        if token != self.token:
            raise ApiError(401, "Unauthorized")
        with self._lock:
            if self._state.down and method != "getUpdates":
                raise ApiError(502, "Bad Gateway")
            pending = self._state.failures.get(method.lower())
            if pending:
                raise pending.pop(0)
        if method == "getUpdates":
            return await self._get_updates(params)
        with self._lock:
            result = self._call(method, params)
            delays = self._state.delays.get(method.lower())
            delay = delays.pop(0) if delays else 0.0
        if delay:  # done, but the answer comes late: as a slow network or a busy Telegram would
            await asyncio.sleep(delay)
        return result

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Long-poll: answer as soon as an update is queued, or [] after ``timeout`` seconds."""
        offset, limit = int(params.get("offset", 0)), max(1, min(100, int(params.get("limit", 100))))
        deadline = time.monotonic() + float(params.get("timeout", 0))
        while True:
            with self._lock:
                if self._state.webhook_url:
                    raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                   "use deleteWebhook to delete the webhook first")
                if "allowed_updates" in params:  # Telegram remembers it for later calls
                    self._state.allowed_updates = list(params["allowed_updates"] or [])
                ready = self._pending(offset)[:limit]
            remaining = deadline - time.monotonic()
            if ready or remaining <= 0 or self._closing:
                return ready
            assert self._wakeup is not None
            # No await between the check above and here, so no wake-up can be missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _pending(self, offset: int) -> list[dict[str, Any]]:
        """Confirm (drop) updates below offset and filter by allowed_updates, as Telegram does."""
        state = self._state
        if offset > 0:
            state.updates = [u for u in state.updates if u["update_id"] >= offset]
        elif offset < 0:  # "-N": keep only the last N updates, forget the rest
            state.updates = state.updates[offset:]
        if state.allowed_updates:
            state.updates = [u for u in state.updates if set(u) & set(state.allowed_updates)]
        return [dict(u) for u in state.updates]

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        """Every method except getUpdates; runs with the lock held. A message in a group that is over its
        flood limit is refused before anything happens; one that fails otherwise costs nothing."""
        chat_id = params.get("chat_id")
        if method not in GROUP_LIMITED or not self._state.group_limit or not isinstance(chat_id, int) or chat_id > 0:
            return self._call_unlimited(method, params)
        tokens, now = self._group_tokens(chat_id)
        result = self._call_unlimited(method, params)
        self._state.buckets[chat_id] = (tokens - 1, now)
        return result

    def _group_tokens(self, chat_id: int) -> tuple[float, float]:
        """The chat's token bucket (capacity N, refilled at N a minute) brought up to now; raises Telegram's
        429 with the whole seconds until a token is free when the chat has none."""
        per_minute = self._state.group_limit
        rate, now = per_minute / 60, time.monotonic()
        tokens, then = self._state.buckets.get(chat_id, (per_minute, now))
        tokens = min(per_minute, tokens + (now - then) * rate)
        self._state.buckets[chat_id] = (tokens, now)
        if tokens + GROUP_LIMIT_SLACK_S * rate < 1:
            wait = max(1, math.ceil((1 - tokens) / rate - 1e-9))
            raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        return tokens, now

    def _call_unlimited(self, method: str, params: dict[str, Any]) -> Any:
        state, scope = self._state, json.dumps([params.get("scope"), params.get("language_code", "")])
        chat_id = params.get("chat_id")
        if method.startswith("send") and isinstance(chat_id, int) and chat_id > 0:
            if chat_id in state.blocked:
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if state.private_needs_start and chat_id not in state.inbound:
                raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        match method:
            case "getMe":
                return dict(BOT_USER)
            case "setWebhook" | "deleteWebhook":
                state.webhook_url = str(params.get("url", "")) if method == "setWebhook" else ""
                if params.get("drop_pending_updates"):
                    state.updates.clear()
            case "getWebhookInfo":
                return {"url": state.webhook_url, "has_custom_certificate": False,
                        "pending_update_count": len(state.updates)}
            case "setMyCommands":
                state.commands[scope] = list(params.get("commands") or [])
            case "getMyCommands":
                return list(state.commands.get(scope, []))
            case "deleteMyCommands":
                state.commands.pop(scope, None)
            case "sendMessage":
                return self._send_message(params)
            case "sendPhoto":
                return self._send_photo(params)
            case "sendDocument":
                return self._send_document(params)
            case "editMessageText":
                return self._edit(params, {k: params.get(k) for k in ("text", "entities", "reply_markup")})
            case "editMessageReplyMarkup":
                return self._edit(params, {"reply_markup": params.get("reply_markup")})
            case "answerCallbackQuery":
                if params.get("callback_query_id") not in state.callback_ids:
                    raise ApiError(400, "Bad Request: query is too old and response timeout expired "
                                   "or query ID is invalid")
            case "sendChatAction" | "close" | "logOut":
                pass
            case _:
                raise ApiError(404, "Not Found: method not found")
        return True

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int):
            raise ApiError(400, "Bad Request: chat not found")
        if not params.get("text"):
            raise ApiError(400, "Bad Request: message text is empty")
        placement = self._placement(chat_id, params)
        message = self._new_message(chat_id, BOT_FROM, str(params["text"]))
        message.update({k: params[k] for k in ("entities", "reply_markup") if params.get(k)}, **placement)
        self._state.messages.setdefault(chat_id, {})[message["message_id"]] = message
        return dict(message)

    def _placement(self, chat_id: int, params: dict[str, Any]) -> dict[str, Any]:
        """The topic and reply fields of a message the bot sends, checked as Telegram does.

        A reply goes to the topic of the message it answers unless message_thread_id says otherwise; a
        message in a topic that answers nothing is a reply to the topic's root (its creation message).
        """
        reply = params.get("reply_parameters") or {}
        original = self._find(chat_id, reply.get("message_id"))
        thread = params.get("message_thread_id")
        if thread is None and original is not None and original.get("is_topic_message"):
            thread = original["message_thread_id"]
        if original is not None and original.get("message_thread_id") != thread:
            original = None  # a message in another topic is not found from this one
        placement: dict[str, Any] = {}
        if thread is not None:
            topic = self._state.forums.get(chat_id, {}).get(thread)
            if topic is None:
                raise ApiError(400, "Bad Request: message thread not found")
            if topic.closed:
                raise ApiError(400, "Bad Request: TOPIC_CLOSED")
            placement = {"message_thread_id": thread, "is_topic_message": True, "reply_to_message": topic.root}
        if original is not None:  # Telegram answers with the whole message replied to
            placement["reply_to_message"] = original
        elif reply.get("message_id") and not reply.get("allow_sending_without_reply"):
            raise ApiError(400, "Bad Request: message to be replied not found")
        if "reply_to_message" in placement:
            placement["reply_to_message"] = {k: v for k, v in placement["reply_to_message"].items()
                                             if k != "reply_to_message"}
        return placement

    def _find(self, chat_id: int, message_id: Any) -> dict[str, Any] | None:
        """A stored message of the bot or of a user in that chat."""
        if not isinstance(message_id, int):
            return None
        state = self._state
        return state.messages.get(chat_id, {}).get(message_id) or state.inbound.get(chat_id, {}).get(message_id)

    def _send_photo(self, params: dict[str, Any]) -> dict[str, Any]:
        """A photo uploaded as a multipart file, or re-sent by the file_id of an earlier one."""
        chat_id, photo = params.get("chat_id"), params.get("photo")
        if not isinstance(chat_id, int):
            raise ApiError(400, "Bad Request: chat not found")
        if isinstance(photo, str):
            if photo not in self._state.photos:
                raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
            size = dict(self._state.photos[photo])
        elif isinstance(photo, dict) and "data" in photo:
            size = self._photo_size(photo["data"])
        else:
            raise ApiError(400, "Bad Request: there is no photo in the request")
        caption = str(params.get("caption") or "")
        if len(caption) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        placement = self._placement(chat_id, params)
        message = self._new_message(chat_id, BOT_FROM, None)
        message["photo"] = [size]
        if caption:
            message["caption"] = caption
        message.update({k: params[k] for k in ("caption_entities", "reply_markup") if params.get(k)}, **placement)
        self._state.messages.setdefault(chat_id, {})[message["message_id"]] = message
        return dict(message)

    def _send_document(self, params: dict[str, Any]) -> dict[str, Any]:
        """A file uploaded as a multipart part with its name, or re-sent by the file_id of an earlier one; the
        call's params["document"]["data"] keeps the uploaded bytes."""
        chat_id, document = params.get("chat_id"), params.get("document")
        if not isinstance(chat_id, int):
            raise ApiError(400, "Bad Request: chat not found")
        if isinstance(document, str):
            if document not in self._state.documents:
                raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
            stored = dict(self._state.documents[document])
        elif isinstance(document, dict) and "data" in document:
            stored = self._document(document)
        else:
            raise ApiError(400, "Bad Request: there is no document in the request")
        caption = str(params.get("caption") or "")
        if len(caption) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        placement = self._placement(chat_id, params)
        message = self._new_message(chat_id, BOT_FROM, None)
        message["document"] = stored
        if caption:
            message["caption"] = caption
        message.update({k: params[k] for k in ("caption_entities", "reply_markup") if params.get(k)}, **placement)
        self._state.messages.setdefault(chat_id, {})[message["message_id"]] = message
        return dict(message)

    def _document(self, upload: dict[str, Any]) -> dict[str, Any]:
        """Check an uploaded file as Telegram does (413 past the upload limit) and remember it under a new
        file_id."""
        data = upload["data"]
        if len(data) > DOCUMENT_LIMIT_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        if not data:
            raise ApiError(400, "Bad Request: file must be non-empty")
        number = len(self._state.documents) + 1
        document = {"file_id": f"BQACAgDocument{number:06d}", "file_unique_id": f"AgADDocument{number:06d}",
                    "file_name": upload["filename"] or "document",
                    "mime_type": upload["content_type"] or "application/octet-stream", "file_size": len(data)}
        self._state.documents[document["file_id"]] = document
        return dict(document)

    def _photo_size(self, data: bytes) -> dict[str, Any]:
        """Check an upload as Telegram does and remember it under a new file_id."""
        if len(data) > PHOTO_LIMIT_BYTES:
            raise ApiError(400, "Bad Request: file is too big")
        dimensions = image_size(data)
        if dimensions is None:
            raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED")
        width, height = dimensions
        if not width or not height or width + height > 10000 or max(width, height) > 20 * min(width, height):
            raise ApiError(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        number = len(self._state.photos) + 1
        size = {"file_id": f"AgACAgPhoto{number:06d}", "file_unique_id": f"AQADPhoto{number:06d}",
                "width": width, "height": height, "file_size": len(data)}
        self._state.photos[size["file_id"]] = size
        return dict(size)

    def _edit(self, params: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """Edit a stored message; omitted reply_markup removes the keyboard, as in Telegram."""
        chat_id = params.get("chat_id")
        message = self._state.messages.get(chat_id, {}).get(params.get("message_id"))  # type: ignore[arg-type]
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        edited = {k: v for k, v in message.items() if k not in ("reply_markup", "edit_date")}
        if "text" in changes:  # new text means new entities (or none)
            edited.pop("entities", None)
        edited.update({k: v for k, v in changes.items() if v})
        if edited == {k: v for k, v in message.items() if k != "edit_date"}:
            raise ApiError(400, "Bad Request: message is not modified: specified new message content "
                           "and reply markup are exactly the same as a current content and reply "
                           "markup of the message")
        message.clear()
        message.update(edited, edit_date=int(time.time()))
        return dict(message)

    def _chat(self, chat_id: int) -> dict[str, Any]:
        """The Chat object, remembering the private user's names from injected messages."""
        kind = chat_type(chat_id)
        default = {"first_name": "Tester"} if kind == "private" else {"title": f"Test {kind}"}
        chat = {"id": chat_id, "type": kind, **self._state.chats.get(chat_id, default)}
        return {**chat, "is_forum": True} if chat_id in self._state.forums else chat

    def _new_message(self, chat_id: int, sender: dict[str, Any], text: str | None) -> dict[str, Any]:
        """A complete Message with the next message_id of that chat; a photo message has no text."""
        message_id = self._state.last_message_id.get(chat_id, 0) + 1
        self._state.last_message_id[chat_id] = message_id
        message = {"message_id": message_id, "date": int(time.time()), "chat": self._chat(chat_id),
                   "from": dict(sender)}
        return message if text is None else {**message, "text": text}

    def _user(self, chat_id: int, user_id: int | None, username: str, first_name: str) -> dict[str, Any]:
        user_id = user_id if user_id is not None else (chat_id if chat_id > 0 else 4242)
        user = {"id": user_id, "is_bot": False, "first_name": first_name, "username": username,
                "language_code": "en"}
        if chat_id > 0:
            self._state.chats[chat_id] = {"first_name": first_name, "username": username}
        return user

    def _enqueue(self, payload: dict[str, Any]) -> int:
        update_id = self._state.next_update_id
        self._state.next_update_id += 1
        self._state.updates.append({"update_id": update_id, **payload})
        return update_id

    def send_text(self, chat_id: int, text: str, user_id: int | None = None,
                  username: str = "tester", first_name: str = "Tester", thread_id: int | None = None) -> int:
        """Queue a user's text message (with a bot_command entity for /commands); returns update_id.

        ``thread_id`` sends it in that topic of a forum (see open_topic); without it a message in a forum goes
        to the General topic.
        """
        with self._lock:
            topic = None
            if thread_id is not None:
                topic = self._state.forums.get(chat_id, {}).get(thread_id)
                if topic is None:
                    raise ValueError(f"chat {chat_id} has no topic {thread_id}")
            message = self._new_message(chat_id, self._user(chat_id, user_id, username, first_name), text)
            if entities := command_entities(text):
                message["entities"] = entities
            if topic is not None:  # as in Telegram, a topic's messages answer the topic's root
                message.update(message_thread_id=thread_id, is_topic_message=True, reply_to_message=dict(topic.root))
            self._state.inbound.setdefault(chat_id, {})[message["message_id"]] = message
            update_id = self._enqueue({"message": message})
        self._notify()
        return update_id

    def make_forum(self, chat_id: int) -> None:
        """Turn a supergroup (an id starting -100) into a forum: its Chat gets ``is_forum``, and topics can be
        opened in it. Messages without a topic are in the General topic."""
        if chat_type(chat_id) != "supergroup":
            raise ValueError(f"only a supergroup can be a forum, not chat {chat_id}")
        with self._lock:
            self._state.forums.setdefault(chat_id, {})
            # Message id 1 stands for the General topic, so no topic (a message id) can take it.
            self._state.last_message_id[chat_id] = max(GENERAL_TOPIC, self._state.last_message_id.get(chat_id, 0))

    def open_topic(self, chat_id: int, name: str, user_id: int | None = None) -> int:
        """Create a topic in a forum, as a user of it would; returns its message_thread_id, the id of the
        forum_topic_created service message. Telegram would also deliver that service message to the bot;
        the fake does not, so that tests see only the updates they queue."""
        with self._lock:
            if chat_id not in self._state.forums:
                raise ValueError(f"chat {chat_id} is not a forum; call make_forum first")
            root = self._new_message(chat_id, self._user(chat_id, user_id, "tester", "Tester"), None)
            thread_id = root["message_id"]
            root.update(message_thread_id=thread_id, is_topic_message=True,
                        forum_topic_created={"name": name, "icon_color": TOPIC_ICON_COLOR})
            self._state.inbound.setdefault(chat_id, {})[thread_id] = root
            self._state.forums[chat_id][thread_id] = _Topic(name, root)
        return thread_id

    def close_topic(self, chat_id: int, thread_id: int, closed: bool = True) -> None:
        """Close a topic (or reopen it with closed=False): the bot can no longer post in it (TOPIC_CLOSED),
        its messages stay and can still be edited."""
        with self._lock:
            self._topic(chat_id, thread_id).closed = closed

    def delete_topic(self, chat_id: int, thread_id: int) -> None:
        """Delete a topic with all its messages: its thread id is then not found."""
        with self._lock:
            self._topic(chat_id, thread_id)
            del self._state.forums[chat_id][thread_id]
            for store in (self._state.messages, self._state.inbound):
                messages = store.get(chat_id, {})
                for message_id in [k for k, m in messages.items() if m.get("message_thread_id") == thread_id]:
                    del messages[message_id]

    def _topic(self, chat_id: int, thread_id: int) -> _Topic:
        topic = self._state.forums.get(chat_id, {}).get(thread_id)
        if topic is None:
            raise ValueError(f"chat {chat_id} has no topic {thread_id}")
        return topic

    def press_button(self, chat_id: int, message_id: int, data: str, user_id: int | None = None,
                     username: str = "tester", first_name: str = "Tester") -> str:
        """Queue a callback_query for a button on message_id (which may be forged); returns its id."""
        with self._lock:
            user = self._user(chat_id, user_id, username, first_name)
            stored = self._state.messages.get(chat_id, {}).get(message_id)
            message = dict(stored) if stored else {
                "message_id": message_id, "date": int(time.time()), "chat": self._chat(chat_id),
                "from": dict(BOT_FROM), "text": ""}
            query_id = str(self._state.next_callback_id * 1000003)  # opaque-looking, like Telegram's
            self._state.next_callback_id += 1
            self._state.callback_ids.add(query_id)
            self._enqueue({"callback_query": {"id": query_id, "from": user, "message": message,
                                              "chat_instance": f"ci{abs(chat_id)}", "data": data}})
        self._notify()
        return query_id

    def limit_groups(self, per_minute: float | None = 20) -> None:
        """Enforce Telegram's flood limit in group chats (negative ids): sendMessage, sendPhoto, sendDocument,
        editMessageText and editMessageReplyMarkup of each group take a token from a bucket of
        ``per_minute`` tokens refilled at ``per_minute`` a minute (a burst, then one every 60/per_minute
        s); a call finding none is answered 429 with retry_after, the whole seconds until one is free,
        and changes nothing. None or 0 lifts the limit. Every group starts with a full bucket."""
        with self._lock:
            self._state.group_limit = per_minute or 0.0
            self._state.buckets.clear()

    def require_start(self, on: bool = True) -> None:
        """As Telegram does: a private chat (positive id) refuses the bot's messages with 403 until its user has
        written to the bot there (pressed Start). Off by default, so tests may alert a private chat at once."""
        with self._lock:
            self._state.private_needs_start = on

    def block(self, user_id: int) -> None:
        """The user blocks the bot: every message to their private chat is refused with 403."""
        with self._lock:
            self._state.blocked.add(user_id)

    def refused(self, chat_id: int | None = None) -> list[Call]:
        """Sends and edits answered 429 (by the group limit, or injected with fail_next), optionally only
        those to one chat."""
        return [c for c in self.calls() if c.status == 429 and c.method in GROUP_LIMITED
                and (chat_id is None or c.params.get("chat_id") == chat_id)]

    def delay_next(self, method: str, seconds: float) -> None:
        """Carry out the next call of ``method`` at once, but answer it only after ``seconds``."""
        with self._lock:
            self._state.delays.setdefault(method.lower(), []).append(seconds)

    def fail_next(self, method: str, error_code: int = 500, description: str | None = None,
                  count: int = 1, retry_after: int | None = None) -> None:
        """Make the next ``count`` calls of ``method`` fail with a Telegram-style error."""
        if error_code == 429 and retry_after is None:
            retry_after = 1
        text = description or {429: f"Too Many Requests: retry after {retry_after}",
                               403: "Forbidden: bot was blocked by the user"}.get(error_code, "Internal Server Error")
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        with self._lock:
            queue = self._state.failures.setdefault(method.lower(), [])
            queue.extend(ApiError(error_code, text, parameters) for _ in range(count))

    def set_down(self, down: bool = True) -> None:
        """Simulate an outage: every method except getUpdates answers 502."""
        with self._lock:
            self._state.down = down

    def calls(self, method: str | None = None) -> list[Call]:
        """Recorded calls, optionally only those of one method (case-insensitive)."""
        with self._lock:
            return [c for c in self._state.calls if method is None or c.method.lower() == method.lower()]

    def last_update(self) -> dict[str, Any]:
        """The update queued last, as getUpdates hands it out, for a test that processes it itself."""
        with self._lock:
            return self._state.updates[-1]

    def call_count(self) -> int:
        """Length of the call log; pass it as ``after=`` to wait only for later calls."""
        with self._lock:
            return len(self._state.calls)

    def messages(self, chat_id: int, thread_id: int | None = None) -> list[dict[str, Any]]:
        """The bot's messages in a chat as currently stored (after edits), oldest first; with ``thread_id``
        only those in that topic (GENERAL_TOPIC: those in no topic)."""
        with self._lock:
            return [dict(m) for m in self._state.messages.get(chat_id, {}).values() if in_topic(m, thread_id)]

    def wait_for_call(self, method: str, predicate: Callable[[Call], bool] = lambda call: True,
                      timeout: float = 15, after: int = 0) -> Call:
        """First call of ``method`` at log index >= after that satisfies predicate."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                log = self._state.calls[after:]
            for call in log:
                if call.method.lower() == method.lower() and predicate(call):
                    return call
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching {method} within {timeout}s; calls seen:\n{self._summary(after)}")
            time.sleep(0.02)

    def wait_for_message(self, chat_id: int, predicate_on_text: Callable[[str], bool] = lambda text: True,
                         timeout: float = 15, after: int = 0, thread_id: int | None = None) -> dict[str, Any]:
        """The Message the fake returned for a matching sendMessage to chat_id; with ``thread_id`` only one
        that landed in that topic (GENERAL_TOPIC: in none)."""
        call = self.wait_for_call(
            "sendMessage", lambda c: c.status == 200 and c.params.get("chat_id") == chat_id
            and in_topic(c.result, thread_id) and predicate_on_text(str(c.params.get("text", ""))),
            timeout, after)
        return dict(call.result)

    def wait_for_photo(self, chat_id: int, predicate_on_caption: Callable[[str], bool] = lambda caption: True,
                       timeout: float = 15, after: int = 0) -> Call:
        """A successful sendPhoto to chat_id; its params["photo"]["data"] holds the uploaded bytes."""
        return self.wait_for_call(
            "sendPhoto", lambda c: c.status == 200 and c.params.get("chat_id") == chat_id
            and predicate_on_caption(str(c.params.get("caption", ""))), timeout, after)

    def wait_for_document(self, chat_id: int, predicate_on_caption: Callable[[str], bool] = lambda caption: True,
                          timeout: float = 15, after: int = 0) -> Call:
        """A successful sendDocument to chat_id; its params["document"]["data"] holds the uploaded bytes."""
        return self.wait_for_call(
            "sendDocument", lambda c: c.status == 200 and c.params.get("chat_id") == chat_id
            and predicate_on_caption(str(c.params.get("caption", ""))), timeout, after)

    def answer_for(self, callback_query_id: str, timeout: float = 15) -> Call:
        """The answerCallbackQuery call for that query id."""
        return self.wait_for_call(
            "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == callback_query_id, timeout)

    def _summary(self, after: int) -> str:
        """Readable tail of the call log for assertion messages (getUpdates noise folded)."""
        with self._lock:
            log = list(enumerate(self._state.calls))[after:]
        polls = sum(1 for _, c in log if c.method == "getUpdates")
        lines = [f"  #{i} {c.method} -> {c.status} {json.dumps(c.params, default=str)[:200]}"
                 for i, c in log if c.method != "getUpdates"]
        return "\n".join([*lines[-40:], f"  (+{polls} getUpdates calls)"])
