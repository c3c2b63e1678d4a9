"""Drives nodegate with the official OpenAI and Anthropic Python SDKs.

Usage: llm_clients.py SCENARIO BASE_URL [API_KEY]
Prints one JSON object with what the SDK returned (or raised). The Rust end-to-end suite
(tests/e2e/llm.rs) starts the gateway and the upstreams and asserts on this output.
"""
import json
import sys
import concurrent.futures

import anthropic
import openai


def oa(base, key):
    return openai.OpenAI(base_url=base + "/v1", api_key=key or "no-key-needed", max_retries=0, timeout=20)


def an(base, key):
    return anthropic.Anthropic(base_url=base, api_key=key or "no-key-needed", max_retries=0, timeout=20)


def err(e):
    return {"raised": type(e).__name__, "status": getattr(e, "status_code", None), "message": str(e)}


def chat(base, key, model="fast"):
    c = oa(base, key)
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "say hello to the gateway"}], max_tokens=6)
    return {"text": r.choices[0].message.content, "usage": r.usage.model_dump(), "model": r.model}


def chat_stream(base, key, model="fast"):
    c = oa(base, key)
    chunks, text, usage = 0, "", None
    for ch in c.chat.completions.create(model=model, stream=True, max_tokens=5, messages=[{"role": "user", "content": "stream please"}]):
        chunks += 1
        if ch.usage is not None:
            usage = ch.usage.model_dump()
        for choice in ch.choices:
            text += choice.delta.content or ""
    return {"text": text, "chunks": chunks, "usage_seen_by_client": usage}


def chat_stream_usage(base, key, model="fast"):
    c = oa(base, key)
    usage = None
    for ch in c.chat.completions.create(model=model, stream=True, max_tokens=5, stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": "stream with usage"}]):
        if ch.usage is not None:
            usage = ch.usage.model_dump()
    return {"usage_seen_by_client": usage}


def tools(base, key, model="fast"):
    c = oa(base, key)
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "weather in Paris?"}], tools=[tool], max_tokens=20)
    call = r.choices[0].message.tool_calls[0]
    return {"tool": call.function.name, "arguments": json.loads(call.function.arguments), "finish": r.choices[0].finish_reason}


def responses(base, key, model="fast"):
    c = oa(base, key)
    r = c.responses.create(model=model, input="hello responses", max_output_tokens=4)
    return {"text": r.output_text, "usage": r.usage.model_dump()}


def embeddings(base, key, model="fast"):
    r = oa(base, key).embeddings.create(model=model, input="embed me please")
    return {"dims": len(r.data[0].embedding), "usage": r.usage.model_dump()}


def messages(base, key, model="fast"):
    r = an(base, key).messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "hello claude"}])
    return {"text": r.content[0].text, "usage": r.usage.model_dump()}


def messages_stream(base, key, model="fast"):
    text = ""
    with an(base, key).messages.stream(model=model, max_tokens=6, messages=[{"role": "user", "content": "stream claude"}]) as s:
        for t in s.text_stream:
            text += t
        final = s.get_final_message()
    return {"text": text, "usage": final.usage.model_dump()}


def expect_error(fn):
    def run(base, key, model="fast"):
        try:
            return {"unexpected_success": fn(base, key, model)}
        except Exception as e:  # the SDK's typed exception is what we assert on
            return err(e)
    return run


def concurrent_calls(base, key, model="fast", n=200):
    """n concurrent chat calls; counts outcomes by status."""
    def one(_):
        try:
            r = oa(base, key).chat.completions.create(model=model, messages=[{"role": "user", "content": "one two three"}], max_tokens=10, temperature=0)
            return ("ok", r.usage.total_tokens)
        except openai.RateLimitError:
            return ("429", 0)
        except Exception as e:
            return (type(e).__name__, 0)
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as ex:
        results = list(ex.map(one, range(n)))
    out = {}
    for status, _ in results:
        out[status] = out.get(status, 0) + 1
    return {"outcomes": out, "tokens_reported_to_clients": sum(t for _, t in results)}


SCENARIOS = {
    "chat": chat, "chat_stream": chat_stream, "chat_stream_usage": chat_stream_usage, "tools": tools,
    "responses": responses, "embeddings": embeddings, "messages": messages, "messages_stream": messages_stream,
    "chat_error": expect_error(chat), "chat_stream_error": expect_error(chat_stream), "messages_error": expect_error(messages),
    "concurrent": concurrent_calls,
}

if __name__ == "__main__":
    scenario, base = sys.argv[1], sys.argv[2]
    key = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    model = sys.argv[4] if len(sys.argv) > 4 else "fast"
    try:
        if scenario == "concurrent" and len(sys.argv) > 5:
            print(json.dumps(concurrent_calls(base, key, model, int(sys.argv[5]))))
        else:
            print(json.dumps(SCENARIOS[scenario](base, key, model)))
    except Exception as e:
        print(json.dumps({"crashed": err(e)}))
