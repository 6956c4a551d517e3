"""Sanitising what reaches the agent through the wrapper: streams, JSON mode, long answers.

Through the real SDK and AutoGen's OpenAIChatCompletionClient against FakeOpenAIServer, which streams an answer
word by word (each chunk is a word with the whitespace before it). What the consumer joins together is judged by
rendering it with markdown-it-py and parsing the HTML (see ``sanitize_judge``).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from autogen_core.models import CreateResult, UserMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from autogen_reliability import ValidationPolicy, reliable
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, ScriptedChatCompletionClient, ScriptedReply
from autogen_reliability.validation import Sanitizer, SanitizeReport, StreamSanitizer, extract_json
from autogen_reliability.validation._layer import OFF_LOOP_CHARS
from autogen_reliability.validation._stream_sanitizer import HOLD_BACK_LIMIT

from .conftest import OpenAIClientFactory
from .sanitize_judge import characters_passed, rendered_problems

ASK = [UserMessage(content="Answer.", source="user")]
SANITIZER = Sanitizer()


async def stream(client: Any, **kwargs: Any) -> tuple[list[str], CreateResult]:
    chunks: list[str] = []
    final: CreateResult | None = None
    async for item in client.create_stream(ASK, **kwargs):
        if isinstance(item, CreateResult):
            final = item
        else:
            chunks.append(item)
    assert final is not None
    return chunks, final


# --- A reasoning model's thought: AutoGen marks it in a stream, R1 models in their content

REASONING_MODEL_INFO: dict[str, Any] = {
    "vision": False,
    "function_calling": True,
    "json_output": True,
    "family": "unknown",
    "structured_output": True,
}


def reasoning_stream() -> FakeReply:
    """DeepSeek's (and vLLM's reasoning parser's) stream: the thought in ``reasoning_content``, then the answer."""
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-reasoner"}
    deltas = [
        {"role": "assistant", "reasoning_content": "The user greets."},
        {"reasoning_content": " Greet back."},
        {"content": "Hello!", "reasoning_content": None},
    ]
    events = [{**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in deltas]
    events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return FakeReply.malformed(body.encode(), content_type="text/event-stream")


async def test_the_marks_autogen_puts_around_a_streamed_thought_reach_the_consumer(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # AutoGen streams the thought as "<think>The user greets.", " Greet back.", "</think>", then the answer: what
    # shows the consumer which part is the answer.
    fake_openai_server.enqueue(reasoning_stream(), reasoning_stream())
    inner = make_openai_client(model="deepseek-reasoner", model_info=REASONING_MODEL_INFO)
    bare_chunks, bare = await stream(inner)
    chunks, final = await stream(reliable(inner, track_usage=False))
    assert bare_chunks == ["<think>The user greets.", " Greet back.", "</think>", "Hello!"]
    assert chunks == bare_chunks
    assert (final.content, final.thought) == (bare.content, bare.thought) == ("Hello!", "The user greets. Greet back.")


async def test_the_thought_an_r1_model_writes_in_its_answer_keeps_its_marks(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    # A DeepSeek-R1 distill behind an OpenAI-compatible server writes its thought in the content, between <think> and
    # </think>; a client whose model_info does not say R1 hands the content on as it came.
    answer = "<think>\nThe user greets.\n</think>\n\nHello!"
    fake_openai_server.enqueue(FakeReply.text(answer), FakeReply.text(answer))
    inner = make_openai_client(model="deepseek-r1-distill-qwen-7b", model_info=REASONING_MODEL_INFO)
    bare = await inner.create(ASK)
    result = await reliable(inner, track_usage=False).create(ASK)
    assert result.content == bare.content == answer


# --- Links split across chunks (the server cuts the answer before every space)

SPLIT_LINKS = [
    "[a)]( javascript:alert(1))",  # "[a)](" then " javascript:alert(1))": the ")" in the text closed the "["
    "![x)]( javascript:alert(1))",
    "[a)]: javascript:alert(1)\n\n[a)]",  # a reference definition
    "[a)]:\njavascript:alert(1)\n\n[a)]",  # its destination on the next line
    "[a)]( &#106;avascript:alert(1))",
    "[" + "a " * 600 + "]( javascript:alert(1))",  # link text longer than what is held back
    "[a]( " + " " * 1200 + "javascript:alert(1))",  # an open destination longer than what is held back
    "Intro text. [a)]( javascript:alert(1)) and [b]( vbscript:msgbox(1)) end.",
]


@pytest.mark.parametrize("answer", SPLIT_LINKS)
async def test_links_split_across_chunks_do_not_render_as_links(
    answer: str, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    assert rendered_problems(answer), "the judge must see the link in the raw answer"
    fake_openai_server.enqueue(FakeReply.text(answer))
    chunks, final = await stream(reliable(make_openai_client()))
    assert len(chunks) >= 1
    assert rendered_problems("".join(chunks)) == []
    assert rendered_problems(str(final.content)) == []


async def test_an_emoji_cut_in_two_by_the_provider_does_not_fail_the_call() -> None:
    # A provider that counts in UTF-16 code units may send an emoji's halves in two deltas, or only one half.
    # The sanitiser's HTML stage (nh3) raised UnicodeEncodeError on them: the call failed, stream or not.
    script = [
        ScriptedReply.stream(["<b>Done</b> \ud83d", "\ude00 ok"]),
        ScriptedReply.text("<b>Done</b> \ud83d"),
    ]
    client = reliable(ScriptedChatCompletionClient(script))
    chunks, final = await stream(client)
    assert "".join(chunks) == final.content == "<b>Done</b> \U0001f600 ok"
    assert (await client.create(ASK)).content == "<b>Done</b> \ufffd"


async def test_words_outside_links_still_flow_chunk_by_chunk(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    answer = "See [the docs](https://example.com/docs) or (if you must) the a < b and x] notes, then [go]( home)."
    fake_openai_server.enqueue(FakeReply.text(answer))
    chunks, final = await stream(reliable(make_openai_client()))
    assert "".join(chunks) == answer == final.content
    assert len(chunks) >= 10  # held back only around an open link, not from every "[", "(" or "<"


# An emoji's style selector (U+FE0F) or a keycap's comes in a delta of its own as often as not. Sanitised alone,
# a selector with nothing before it was removed: the consumer saw "⚠" and "1⃣" where create() keeps "⚠️" and "1️⃣".
EMOJI_ANSWER = "Careful \u26a0\ufe0f, press 1\ufe0f\u20e3 \u2764\ufe0f and \u2764\ufe0f\ufe0f# \ufe0fx"


async def test_emoji_style_selectors_in_chunks_of_their_own_are_kept_as_create_keeps_them() -> None:
    script = [ScriptedReply.stream(list(EMOJI_ANSWER)), ScriptedReply.text(EMOJI_ANSWER)]
    client = reliable(ScriptedChatCompletionClient(script), track_usage=False)
    chunks, final = await stream(client)
    created = (await client.create(ASK)).content
    assert created == SANITIZER.text(EMOJI_ANSWER)[0]
    assert "".join(chunks) == final.content == created
    for cut in range(len(EMOJI_ANSWER) + 1):
        streamer = StreamSanitizer(SANITIZER)
        joined = streamer.feed(EMOJI_ANSWER[:cut]) + streamer.feed(EMOJI_ANSWER[cut:]) + streamer.finish()
        assert joined == created, cut


# --- Any split: the joined pieces render as safely as the whole

LINK_FRAGMENTS = [
    "[a)](",
    "![x)](",
    "[a)]:",
    "[",
    "]",
    "(",
    ")",
    ":",
    "](",
    "]:",
    "<",
    ">",
    "<foo>",
    "</foo>",
    "<a href=",
    '"',
    "javascript:alert(1)",
    "javas",
    "cript:",  # "< script" would read as a tag to the judge, which errs on the strict side
    "JaVa",
    "vbscript:x",
    "data:text/html,x",
    "&#106;",
    "&#x6a;",
    "&amp;",
    "&",
    "#",
    "\\",
    "\u200b",
    "\x1b[31m",
    " ",
    "\n",
    "> ",
    "&Tab;",
    "x",
]
hostile_links = st.lists(st.sampled_from(LINK_FRAGMENTS), max_size=30).map("".join)


@settings(max_examples=1500, deadline=None)
@given(hostile_links, st.lists(st.integers(min_value=0, max_value=400), max_size=12), st.sampled_from([16, 1024]))
def test_any_split_joins_to_text_that_renders_safely(text: str, cuts: list[int], limit: int) -> None:
    positions = sorted({min(cut, len(text)) for cut in cuts})
    pieces = [text[start:end] for start, end in zip([0, *positions], [*positions, len(text)], strict=True)]
    streamer = StreamSanitizer(SANITIZER, limit=limit)
    joined = "".join(streamer.feed(piece) for piece in pieces) + streamer.finish()
    assert rendered_problems(joined) == []


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["line one\r", "\nline two"], "line one\r\nline two"),  # a line end cut in two stays one
        (["approved\r", "denied  "], "approved\ndenied  "),  # a carriage return alone becomes a line feed
        (["approved\r"], "approved\n"),  # also at the end of the stream
        (["a\r", "\r", "\n"], "a\n\r\n"),
    ],
)
def test_a_carriage_return_at_a_chunks_end_waits_for_what_follows(pieces: list[str], expected: str) -> None:
    streamer = StreamSanitizer(SANITIZER)
    assert "".join(streamer.feed(piece) for piece in pieces) + streamer.finish() == expected


# The 8-bit introducers of DCS, SOS, PM and APC strings were not held as ESC, CSI and OSC are: cut after the
# introducer, the string's body (hidden by a terminal, removed by create()) reached the consumer as text.
@pytest.mark.parametrize("introducer", ["\x1b]", "\x1bP", "\x9d", "\x90", "\x98", "\x9e", "\x9f"])
def test_an_escape_string_fed_one_character_at_a_time_is_removed_as_a_whole_one_is(introducer: str) -> None:
    text = f"before {introducer}hidden payload\x9c after"
    whole = SANITIZER.text(text)[0]
    assert whole == "before  after"
    streamer = StreamSanitizer(SANITIZER)
    assert "".join(streamer.feed(char) for char in text) + streamer.finish() == whole


@pytest.mark.parametrize(
    "pieces",
    [
        ["Pay to &#x20", "2e;4321"],
        ["Pay to &", "#8238;4321"],
        ["a &rl", "m; b"],
        ["&\u200b", "#x202e;4321"],  # sanitising the first piece leaves an "&" the second completes
    ],
)
def test_a_character_reference_cut_in_two_is_removed_as_a_whole_one_is(pieces: list[str]) -> None:
    streamer = StreamSanitizer(SANITIZER)
    joined = "".join(streamer.feed(piece) for piece in pieces) + streamer.finish()
    assert joined == SANITIZER.text("".join(pieces))[0]
    assert not any(char in MarkdownIt().render(joined) for char in "\u202e\u200f")
    # Held for longer than the limit, its "&" is escaped: whatever follows, it shows as text.
    streamer = StreamSanitizer(SANITIZER, limit=8)
    joined = streamer.feed("&#" + "0" * 20) + streamer.feed("8238;4321") + streamer.finish()
    assert "\u202e" not in MarkdownIt().render(joined)


def test_a_hold_longer_than_the_limit_is_neutralised_not_released_raw() -> None:
    streamer = StreamSanitizer(SANITIZER)
    released = streamer.feed("[a](")
    released += streamer.feed(" " * (HOLD_BACK_LIMIT + 10))
    # Released, with its open destination closed.
    assert released.startswith("[a](")
    assert released.endswith("#")
    joined = released + streamer.feed("javascript:alert(1))") + streamer.finish()
    assert rendered_problems(joined) == []
    # A "]" at the end of what is forced out is escaped: a "(" after it opens nothing.
    streamer = StreamSanitizer(SANITIZER, limit=8)
    joined = streamer.feed("[abc]") + streamer.feed("\u200b" * 20) + streamer.feed("(javascript:x)") + streamer.finish()
    assert rendered_problems(joined) == []


def test_holding_back_is_linear_in_what_is_held() -> None:
    # An open destination fed one character at a time is looked at again only when the held text has doubled.
    # Counted, not timed: the characters the hold-back rule reads, against the characters fed (1.5 of them
    # per character fed now; looking at all held text again at every chunk read ~500).
    streamer = StreamSanitizer(SANITIZER)
    rounds = 200

    def feed() -> None:
        for _ in range(rounds):
            streamer.feed("[a](")
            for index in range(HOLD_BACK_LIMIT):
                streamer.feed("&Tab;"[index % 5])

    examined = characters_passed("_hold_from", "text", feed)
    assert rendered_problems(streamer.finish()) == []
    assert examined <= 4 * rounds * (HOLD_BACK_LIMIT + 4)


# --- JSON mode without a ValidationPolicy

HAZARDS = ("\x1b", "\x07", "\u202e")
ESCAPED_JSON = '{"title": "\\u001b[31mred\\u001b[0m", "note": "\\u001b]52;c;ZXZpbA==\\u0007 copy", "x": "a\\u202eb"}'


def assert_clean(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False)
    assert not any(hazard in text for hazard in HAZARDS), text


@pytest.mark.parametrize(
    "answer",
    [
        ESCAPED_JSON,
        f"```json\n{ESCAPED_JSON}\n```",
        f"Here it is:\n\n```\n{ESCAPED_JSON}\n```\nHope that helps.",
        f"Sure! {ESCAPED_JSON} Anything else?",
    ],
)
@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_json_mode_hands_on_json_whose_strings_are_sanitised(
    answer: str, mode: str, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    assert any(hazard in json.dumps(extract_json(answer), ensure_ascii=False) for hazard in HAZARDS)
    fake_openai_server.enqueue(FakeReply.text(answer))
    client = reliable(make_openai_client())
    if mode == "create":
        final = await client.create(ASK, json_output=True)
    else:
        chunks, final = await stream(client, json_output=True)
        assert "".join(chunks) == final.content  # the chunks carry the sanitised answer, not the raw JSON text
    content = str(final.content)
    assert_clean(extract_json(content))
    assert extract_json(content)["title"] == "red"
    if "Hope that helps." in answer:
        assert content.startswith("Here it is:")  # the prose stays
        assert content.rstrip().endswith("Hope that helps.")


# A leaf holding markup that nh3 rewrites (it quotes the attribute): sanitised as text, the JSON around it
# broke, and the escaped hazards in the other leaf survived.
HTML_JSON = '{"note": "\\u202eevil\\u001b]52;c;ZXZpbA==\\u0007", "html": "<a href=https://ok.example>ok</a>"}'


@pytest.mark.parametrize(
    "answer",
    [
        f"Here you go: {HTML_JSON}",
        f"Here you go:\n```json\n{HTML_JSON}\n```\nThat is <b>all</b>.\u202e",
        f"<i>Sure</i> [x](javascript:alert(1)) {HTML_JSON} Anything else?\u001b[31m",
        # A raw control character inside a string: JSON only once the character stages have run.
        "Sure: " + HTML_JSON.replace("evil", "ev\u001b[2Jil") + " Bye.",
    ],
)
@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_json_mode_sanitises_json_in_prose_leaf_by_leaf_and_the_prose_as_text(
    answer: str, mode: str, fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.text(answer))
    client = reliable(make_openai_client())
    if mode == "create":
        final = await client.create(ASK, json_output=True)
    else:
        chunks, final = await stream(client, json_output=True)
        assert "".join(chunks) == final.content
    content = str(final.content)
    value = extract_json(content)
    assert value == SANITIZER.value(json.loads(HTML_JSON))[0]
    assert value["note"] == "evil"
    assert value["html"].startswith('<a href="https://ok.example"')
    assert content.startswith(SANITIZER.text(answer[: answer.index("{")])[0])  # the prose stays, sanitised
    assert not any(hazard in content for hazard in HAZARDS)
    assert "\\u202e" not in content
    assert "\\u001b" not in content
    assert "javascript:" not in content


@pytest.mark.parametrize("validation", [None, ValidationPolicy(reask=0, on_failure="return")])
@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_json_mode_hands_on_json_nested_beyond_the_recursion_limit_as_text(
    validation: ValidationPolicy | None,
    mode: str,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    # json.loads raises RecursionError, not ValueError, for it: the call failed with that, unless validation
    # (which refuses such JSON as too deep) raised first.
    answer = '{"a": ' + "[" * 5000 + "\u001b[2J" + "]" * 5000 + "} \u202e"
    fake_openai_server.enqueue(FakeReply.text(answer))
    client = reliable(make_openai_client(), validation=validation)
    if mode == "create":
        final = await client.create(ASK, json_output=True)
    else:
        chunks, final = await stream(client, json_output=True)
        assert "".join(chunks) == final.content
    assert final.content == SANITIZER.text(answer)[0]
    assert "\u202e" not in str(final.content)


async def test_json_mode_with_validation_streams_the_sanitised_json(
    fake_openai_server: FakeOpenAIServer, make_openai_client: OpenAIClientFactory
) -> None:
    fake_openai_server.enqueue(FakeReply.text(f"```json\n{ESCAPED_JSON}\n```"))
    chunks, final = await stream(reliable(make_openai_client(), validation=ValidationPolicy()), json_output=True)
    assert_clean(json.loads("".join(chunks)))
    assert "".join(chunks) == final.content


# JSON asked for other than by json_output: a schema in the ValidationPolicy (the wrapper sends it as a
# response_format), or the caller's own response_format. The answer was sanitised as text: its escaped hazards
# survived and the markup in a leaf was rewritten with quotes that ended the string, so the JSON broke.
NOTE_SCHEMA = {"type": "object", "properties": {"note": {"type": "string"}, "html": {"type": "string"}}}


@pytest.mark.parametrize(
    ("validation", "extra", "built_with"),
    [
        (ValidationPolicy(schema=NOTE_SCHEMA), {}, {}),
        (None, {"response_format": {"type": "json_object"}}, {}),
        (None, {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": NOTE_SCHEMA}}}, {}),
        # AutoGen's JSON mode set once, in the client's configuration: sent with every request.
        (None, {}, {"response_format": {"type": "json_object"}}),
    ],
    ids=["validation-schema", "json-object", "json-schema", "client-json-object"],
)
@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_json_asked_for_without_json_output_is_sanitised_leaf_by_leaf(
    validation: ValidationPolicy | None,
    extra: dict[str, Any],
    built_with: dict[str, Any],
    mode: str,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
) -> None:
    fake_openai_server.enqueue(FakeReply.text(HTML_JSON))
    client = reliable(make_openai_client(**built_with), validation=validation)
    if mode == "create":
        final = await client.create(ASK, extra_create_args=extra)
    else:
        chunks, final = await stream(client, extra_create_args=extra)
        assert "".join(chunks) == final.content
    value = json.loads(str(final.content))
    assert value == SANITIZER.value(json.loads(HTML_JSON))[0]
    assert value["note"] == "evil"


# --- Long answers and the event loop

LINK_DENSE = "[x](&" * 200_000 + " [y](javascript:alert(1))"  # 1 MB


class ThreadWatch:
    """Notes which thread sanitised how many characters: the real sanitiser runs, this only watches it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int]] = []  # (thread id, characters)
        original = Sanitizer.text

        def text(sanitizer: Sanitizer, value: str) -> tuple[str, SanitizeReport]:
            self.calls.append((threading.get_ident(), len(value)))
            return original(sanitizer, value)

        monkeypatch.setattr(Sanitizer, "text", text)


@pytest.mark.parametrize("mode", ["create", "stream"])
async def test_a_long_answer_is_sanitised_off_the_event_loop(
    mode: str,
    fake_openai_server: FakeOpenAIServer,
    make_openai_client: OpenAIClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Off the loop, not fast: how long the loop waits is measured in benchmarks/bench_sanitize.py.
    watch = ThreadWatch(monkeypatch)
    fake_openai_server.enqueue(FakeReply.text(LINK_DENSE))
    client = reliable(make_openai_client())
    if mode == "create":
        final = await client.create(ASK)
    else:
        chunks, final = await stream(client)
        assert rendered_problems("".join(chunks)[-40:]) == []
    assert str(final.content).endswith("[y](#)")
    loop_thread = threading.get_ident()
    on_the_loop = [size for thread, size in watch.calls if thread == loop_thread]
    elsewhere = [size for thread, size in watch.calls if thread != loop_thread]
    assert max(on_the_loop, default=0) <= OFF_LOOP_CHARS
    assert sum(elsewhere) >= len(LINK_DENSE)  # the whole answer, sanitised in a worker thread
