"""The fake Telegram API, driven by the real python-telegram-bot client over HTTP."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import AIORateLimiter, Application, CallbackQueryHandler, CommandHandler, ContextTypes, ExtBot

from tests.fakes.telegram_api import GENERAL_TOPIC, FakeTelegram

pytestmark = pytest.mark.timeout(30)
CHAT = 4242
GROUP = -100777  # a supergroup


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    """A running fake server, stopped after the test."""
    with FakeTelegram() as server:
        yield server


async def ping(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/ping -> "pong" with one inline button."""
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data="again")]])
    await update.effective_message.reply_text("pong", reply_markup=keyboard)


async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer the query and replace the message text (dropping the keyboard)."""
    query = update.callback_query
    await query.answer("ok")
    await query.edit_message_text(f"pressed: {query.data}")


@asynccontextmanager
async def running_bot(fake: FakeTelegram) -> AsyncIterator[Application]:
    """A polling PTB Application pointed at the fake."""
    app = (Application.builder().token(fake.token)
           .base_url(f"{fake.url}/bot").base_file_url(f"{fake.url}/file/bot").build())
    app.add_handler(CommandHandler("ping", ping))
    app.add_handler(CallbackQueryHandler(pressed))
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        yield app
        await app.updater.stop()
        await app.stop()


def bot_for(fake: FakeTelegram, token: str | None = None) -> Bot:
    """A bare PTB Bot talking to the fake."""
    return Bot(token or fake.token, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot")


@pytest.mark.asyncio
async def test_ping_reply_carries_keyboard_as_dict(fake: FakeTelegram) -> None:
    async with running_bot(fake):
        mark = fake.call_count()
        fake.send_text(CHAT, "/ping")
        sent = await asyncio.to_thread(fake.wait_for_message, CHAT, lambda text: text == "pong", 10, mark)
    call = fake.calls("sendMessage")[0]
    assert call.params["chat_id"] == CHAT
    assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "again"
    assert sent["from"]["username"] == "rigwatch_bot" and sent["chat"]["type"] == "private"
    assert fake.calls("getMe") and fake.calls("deleteWebhook")


@pytest.mark.asyncio
async def test_button_press_is_answered_and_edits_message(fake: FakeTelegram) -> None:
    async with running_bot(fake):
        fake.send_text(CHAT, "/ping@rigwatch_bot")
        sent = await asyncio.to_thread(fake.wait_for_message, CHAT, lambda text: text == "pong", 10)
        query_id = fake.press_button(CHAT, sent["message_id"], "again")
        answer = await asyncio.to_thread(fake.answer_for, query_id, 10)
        edit = await asyncio.to_thread(fake.wait_for_call, "editMessageText", lambda c: True, 10)
    assert answer.params["text"] == "ok"
    assert edit.status == 200 and edit.result["text"] == "pressed: again"
    [stored] = fake.messages(CHAT)
    assert stored["text"] == "pressed: again" and "reply_markup" not in stored


@pytest.mark.asyncio
async def test_forged_button_press_reaches_handler_but_edit_is_rejected(fake: FakeTelegram) -> None:
    async with running_bot(fake):
        query_id = fake.press_button(CHAT, 999, "forged")
        await asyncio.to_thread(fake.answer_for, query_id, 10)
        edit = await asyncio.to_thread(fake.wait_for_call, "editMessageText", lambda c: True, 10)
    assert edit.status == 400 and edit.params["message_id"] == 999


@pytest.mark.asyncio
async def test_each_update_is_delivered_once(fake: FakeTelegram) -> None:
    async with running_bot(fake):
        first = fake.send_text(CHAT, "/ping")
        second = fake.send_text(CHAT, "/ping")
        await asyncio.to_thread(fake.wait_for_call, "getUpdates",
                                lambda c: c.params.get("offset") == second + 1, 10)
        await asyncio.sleep(0.3)  # room for a wrongly repeated delivery to show up
    assert len(fake.calls("sendMessage")) == 2
    delivered = [u["update_id"] for c in fake.calls("getUpdates") for u in c.result or []]
    assert delivered == [first, second]


def test_offset_limit_and_long_poll_over_plain_http(fake: FakeTelegram) -> None:
    url = f"{fake.url}/bot{fake.token}/GETUPDATES"
    ids = [fake.send_text(1, f"hi {n}") for n in range(3)]
    assert [u["update_id"] for u in httpx.post(url, data={"limit": "2"}).json()["result"]] == ids[:2]
    assert httpx.post(url, data={"offset": str(ids[2] + 1)}).json()["result"] == []
    threading.Timer(0.3, fake.send_text, args=(1, "late")).start()
    started = time.monotonic()
    late = httpx.post(url, data={"timeout": "5"}, timeout=10).json()["result"]
    assert [u["message"]["text"] for u in late] == ["late"] and time.monotonic() - started < 3
    missing = httpx.post(f"{fake.url}/bot{fake.token}/noSuchMethod")
    assert missing.status_code == 404 and missing.json()["description"] == "Not Found: method not found"


@pytest.mark.asyncio
async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with bot_for(fake, "999:wrong"):
            pass
    assert fake.calls("getMe")[0].status == 401


@pytest.mark.asyncio
async def test_injected_failures_and_outage(fake: FakeTelegram) -> None:
    async with bot_for(fake) as bot:
        fake.fail_next("sendMessage", 429, retry_after=3)
        with pytest.raises(RetryAfter):
            await bot.send_message(CHAT, "x")
        fake.set_down(True)
        with pytest.raises(NetworkError):
            await bot.send_message(CHAT, "x")
        assert await bot.get_updates(timeout=0) == ()
        fake.set_down(False)
        sent = await bot.send_message(CHAT, "x")
        with pytest.raises(BadRequest, match="not modified"):
            await sent.edit_text("x")
    assert [c.status for c in fake.calls("sendMessage")] == [429, 502, 200]


@pytest.mark.asyncio
async def test_a_private_chat_takes_the_bot_only_once_its_user_wrote_and_never_once_blocked(
        fake: FakeTelegram) -> None:
    fake.require_start()
    async with bot_for(fake) as bot:
        with pytest.raises(Forbidden, match="can't initiate conversation"):
            await bot.send_message(CHAT, "hello")
        await bot.send_message(GROUP, "a group needs no start")
        fake.send_text(CHAT, "/start", user_id=CHAT)
        await bot.send_message(CHAT, "hello")
        fake.block(CHAT)
        with pytest.raises(Forbidden, match="blocked"):
            await bot.send_message(CHAT, "again")
    assert [m["text"] for m in fake.messages(CHAT)] == ["hello"]


def png(width: int, height: int) -> bytes:
    """A tiny but valid PNG header of the given dimensions: all the fake reads."""
    return (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big")
            + b"\x08\x02\x00\x00\x00" + b"\x00" * 4)


@pytest.mark.asyncio
async def test_a_photo_is_uploaded_as_multipart_and_its_bytes_are_recorded(fake: FakeTelegram) -> None:
    image = png(800, 700)
    async with bot_for(fake) as bot:
        sent = await bot.send_photo(CHAT, image, caption="<b>pc1</b>, the last 2 h", parse_mode="HTML",
                                    filename="pc1.png")
        again = await bot.send_photo(CHAT, sent.photo[-1].file_id)
    call = fake.calls("sendPhoto")[0]
    assert call.params["photo"]["data"] == image and call.params["photo"]["filename"] == "pc1.png"
    assert call.params["caption"] == "<b>pc1</b>, the last 2 h" and call.params["parse_mode"] == "HTML"
    assert (sent.photo[-1].width, sent.photo[-1].height, sent.photo[-1].file_size) == (800, 700, len(image))
    assert sent.caption == "<b>pc1</b>, the last 2 h" and sent.text is None
    assert again.photo[-1].file_id == sent.photo[-1].file_id and again.message_id == sent.message_id + 1


@pytest.mark.asyncio
async def test_a_photo_telegram_would_refuse_is_refused(fake: FakeTelegram) -> None:
    async with bot_for(fake) as bot:
        with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
            await bot.send_photo(CHAT, b"not an image at all", filename="x.png")
        with pytest.raises(BadRequest, match=r"(?i)photo_invalid_dimensions"):
            await bot.send_photo(CHAT, png(4000, 100), filename="x.png")
        with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
            await bot.send_photo(CHAT, png(100, 100), caption="x" * 1025, filename="x.png")
        with pytest.raises(BadRequest, match=r"(?i)wrong file identifier"):
            await bot.send_photo(CHAT, "AgACAgNoSuchFile")
    assert [c.status for c in fake.calls("sendPhoto")] == [400] * 4


@pytest.mark.asyncio
async def test_a_document_is_uploaded_with_its_name_and_its_bytes_are_recorded(fake: FakeTelegram) -> None:
    report = "# Incident #12 on pc1\n\n- 14:04:10 UTC: @bob pressed ✅ correct\n".encode()
    async with bot_for(fake) as bot:
        sent = await bot.send_document(CHAT, report, filename="incident-12-pc1.md", caption="📄 Incident #12")
        again = await bot.send_document(CHAT, sent.document.file_id)
        chart = await sent.reply_photo(png(800, 700), filename="c.png", do_quote=True)
    call = fake.wait_for_document(CHAT)
    assert call.params["document"]["data"] == report and call.params["document"]["filename"] == "incident-12-pc1.md"
    assert (sent.document.file_name, sent.document.file_size) == ("incident-12-pc1.md", len(report))
    assert sent.document.mime_type and sent.caption == "📄 Incident #12" and sent.text is None
    assert again.document == sent.document and again.message_id == sent.message_id + 1
    assert chart.reply_to_message.document.file_id == sent.document.file_id


@pytest.mark.asyncio
async def test_a_document_telegram_would_refuse_is_refused(fake: FakeTelegram) -> None:
    async with bot_for(fake) as bot:
        with pytest.raises(BadRequest, match=r"(?i)must be non-empty"):
            await bot.send_document(CHAT, b"", filename="empty.md")
        with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
            await bot.send_document(CHAT, b"# x", caption="x" * 1025, filename="x.md")
        with pytest.raises(BadRequest, match=r"(?i)wrong file identifier"):
            await bot.send_document(CHAT, "BQACAgNoSuchFile")
        with pytest.raises(NetworkError, match=r"(?i)too large"):  # PTB's words for Telegram's 413
            await bot.send_document(CHAT, b"x" * (50 * 1024 * 1024 + 1), filename="big.bin",
                                    write_timeout=60)
    assert [c.status for c in fake.calls("sendDocument")] == [400, 400, 400, 413]
    assert fake.messages(CHAT) == []


@pytest.mark.asyncio
async def test_documents_count_against_a_groups_flood_limit(fake: FakeTelegram) -> None:
    fake.limit_groups(per_minute=2)
    async with bot_for(fake) as bot:
        await bot.send_message(GROUP, "alert")
        await bot.send_document(GROUP, b"# report", filename="r.md")
        with pytest.raises(RetryAfter):
            await bot.send_document(GROUP, b"# report", filename="r.md")
    assert [c.method for c in fake.refused(GROUP)] == ["sendDocument"] and len(fake.messages(GROUP)) == 2


def retry_seconds(error: RetryAfter) -> float:
    """retry_after in seconds, whichever type this PTB gives it as."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB 22 announces that it will become a timedelta
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@pytest.mark.asyncio
async def test_a_client_pacing_itself_with_aioratelimiter_is_never_refused() -> None:
    with FakeTelegram(group_limit_per_minute=20) as fake:
        bot = ExtBot(fake.token, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot",
                     rate_limiter=AIORateLimiter())  # PTB's defaults: 20 a minute per group
        async with bot:
            sent = await asyncio.gather(*(bot.send_message(GROUP, f"alert {n}") for n in range(21)))
            await bot.edit_message_text("alert 0, resolved", GROUP, sent[0].message_id)
    assert fake.refused() == [] and len(fake.messages(GROUP)) == 21
    times = [c.time for c in fake.calls() if c.method in ("sendMessage", "editMessageText")]
    assert max(times) - min(times) > 5.5  # a burst of 20, then one every 3 s: the limit was reached


@pytest.mark.asyncio
async def test_a_client_that_does_not_pace_itself_is_refused_with_retry_after(fake: FakeTelegram) -> None:
    fake.limit_groups(per_minute=20)
    async with bot_for(fake) as bot:
        await asyncio.gather(*(bot.send_message(CHAT, f"private {n}") for n in range(25)))  # not a group
        results = await asyncio.gather(*(bot.send_message(GROUP, f"alert {n}") for n in range(21)),
                                       return_exceptions=True)
        [refusal] = [r for r in results if isinstance(r, Exception)]
        assert isinstance(refusal, RetryAfter)
        first = fake.calls("sendMessage")[25]
        [refused] = fake.refused(GROUP)
        # A token every 3 s: the 21st waits for the one due 3 s after the burst began.
        assert retry_seconds(refusal) in {math.ceil(3 - (refused.time - first.time) + d) for d in (-0.05, 0.05)}
        assert len(fake.messages(GROUP)) == 20  # the refused call made no message
        with pytest.raises(RetryAfter):
            await bot.edit_message_text("edited", GROUP, 1)  # edits count too, and change nothing
        assert all(m["text"].startswith("alert") and "edit_date" not in m for m in fake.messages(GROUP))
        raw = httpx.post(f"{fake.url}/bot{fake.token}/sendMessage", data={"chat_id": str(GROUP), "text": "x"})
        retry = raw.json()["parameters"]["retry_after"]
        assert raw.status_code == 429 and raw.json() == {
            "ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry}",
            "parameters": {"retry_after": retry}}
        await asyncio.sleep(retry)  # waiting as told is enough
        await bot.send_message(GROUP, "after the wait")
    assert [c.method for c in fake.refused(GROUP)] == ["sendMessage", "editMessageText", "sendMessage"]
    assert fake.refused(CHAT) == [] and len(fake.messages(GROUP)) == 21


def updates_seen(fake: FakeTelegram) -> list[dict]:
    """Every update the bot fetched, in order."""
    return [u for c in fake.calls("getUpdates") for u in c.result or []]


@pytest.mark.asyncio
async def test_a_command_in_a_topic_is_answered_in_that_topic(fake: FakeTelegram) -> None:
    fake.make_forum(GROUP)
    ops = fake.open_topic(GROUP, "ops")
    async with running_bot(fake):
        fake.send_text(GROUP, "/ping", thread_id=ops)
        reply = await asyncio.to_thread(fake.wait_for_message, GROUP, lambda text: text == "pong", 10, 0, ops)
        fake.send_text(GROUP, "/ping")
        general = await asyncio.to_thread(fake.wait_for_message, GROUP, lambda text: True, 10, 0, GENERAL_TOPIC)
        query_id = fake.press_button(GROUP, reply["message_id"], "again")
        await asyncio.to_thread(fake.answer_for, query_id, 10)
        edit = await asyncio.to_thread(fake.wait_for_call, "editMessageText", lambda c: True, 10)
    asked = updates_seen(fake)[0]["message"]
    assert asked["chat"]["is_forum"] is True and asked["is_topic_message"] is True
    assert asked["message_thread_id"] == ops and asked["reply_to_message"]["forum_topic_created"]["name"] == "ops"
    assert reply["message_thread_id"] == ops and reply["is_topic_message"] is True
    assert reply["reply_to_message"]["message_id"] == asked["message_id"]  # PTB quotes in groups
    assert "message_thread_id" not in general and "is_topic_message" not in general
    pressed = updates_seen(fake)[-1]["callback_query"]["message"]
    assert pressed["message_thread_id"] == ops and pressed["text"] == "pong"
    assert edit.status == 200 and edit.result["message_thread_id"] == ops
    assert [m["text"] for m in fake.messages(GROUP, thread_id=ops)] == ["pressed: again"]
    assert [m["message_id"] for m in fake.messages(GROUP, thread_id=GENERAL_TOPIC)] == [general["message_id"]]
    assert len(fake.messages(GROUP)) == 2


@pytest.mark.asyncio
async def test_a_closed_deleted_or_unknown_topic_is_refused(fake: FakeTelegram) -> None:
    fake.make_forum(GROUP)
    ops, db = fake.open_topic(GROUP, "ops"), fake.open_topic(GROUP, "db")
    async with bot_for(fake) as bot:
        sent = await bot.send_message(GROUP, "disk full", message_thread_id=ops)
        photo = await bot.send_photo(GROUP, png(100, 100), message_thread_id=db, filename="c.png")
        assert (sent.message_thread_id, sent.is_topic_message, sent.chat.is_forum) == (ops, True, True)
        assert sent.reply_to_message.forum_topic_created.name == "ops" and photo.message_thread_id == db
        fake.close_topic(GROUP, ops)
        with pytest.raises(BadRequest, match=r"(?i)topic_closed"):
            await bot.send_message(GROUP, "again", message_thread_id=ops)
        with pytest.raises(BadRequest, match=r"(?i)topic_closed"):  # a reply goes where its message is
            await sent.reply_text("again")
        assert (await sent.edit_text("disk fine")).message_thread_id == ops  # old messages stay editable
        fake.close_topic(GROUP, ops, closed=False)
        assert (await sent.reply_text("reopened")).message_thread_id == ops
        fake.delete_topic(GROUP, db)
        with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
            await bot.send_message(GROUP, "x", message_thread_id=db)
        with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
            await bot.send_message(GROUP, "x", message_thread_id=999)
        with pytest.raises(BadRequest, match=r"(?i)message thread not found"):
            await bot.send_message(-100555, "x", message_thread_id=ops)  # not a forum
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Zoom", callback_data="zoom")]])
        with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):  # gone with its topic
            await photo.edit_reply_markup(keyboard)
    assert [m["text"] for m in fake.messages(GROUP, thread_id=ops)] == ["disk fine", "reopened"]
    assert fake.messages(GROUP, thread_id=db) == []
    with pytest.raises(ValueError, match="no topic"):
        fake.send_text(GROUP, "hi", thread_id=db)
