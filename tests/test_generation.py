"""Generation: vLLM and transformers agree token for token, prompts are rendered once,
long documents are cut and flagged, duplicates are shared, records round-trip."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
from transformers import AutoTokenizer

from harness.config import GenerationConfig
from harness.errors import PrunescopeError
from harness.records import RecordError
from harness.generation import GenerationError, generate_cell, meta_path, read_generations
from harness.generation.backends import padding_token_id
from harness.generation.prompts import (INSTRUCTIONS, SYSTEM_MESSAGE, PromptError, prompt_template,
                                        render_ids, resolve_layout)
from harness.generation.truncation import ContextTooSmallError, fit_prompt
from harness.records import ModelIdentity

CONTEXT = 1024  # the tiny models' context and the vllm_engine fixture's max_model_len
DOCUMENTS = [
    ("council", "The city council met on Tuesday to approve a new budget for public transport."),
    ("rain", "Heavy rain flooded several streets, and the fire service rescued a family."),
    ("trial", "The trial enrolled four hundred adults and compared the new drug with a placebo "
              "over six months. Researchers found that patients recovered faster."),
]
LONG = "The minister said the new law would protect workers and improve safety in factories. " * 120


def identity(name: str) -> ModelIdentity:
    return ModelIdentity(name=name, source=name, checkpoint_hash="0" * 16)


def config(backend: str, **overrides) -> GenerationConfig:
    settings = {"backend": backend, "max_new_tokens": 12, "batch_size": 2,
                "engine": {"dtype": "float32", "max_model_len": CONTEXT, "enforce_eager": True}}
    return GenerationConfig(**{**settings, **overrides})


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_vllm_and_transformers_generate_identical_greedy_ids(tiny, vllm_engine, tmp_path, family):
    pytest.importorskip("vllm")
    path = tiny(family)
    documents = DOCUMENTS + [("long", LONG)]
    by_vllm = generate_cell(path, documents, "A", config("vllm"), identity(family), tmp_path / "v.jsonl",
                            llm=vllm_engine(path))
    by_hf = generate_cell(path, documents, "A", config("hf"), identity(family), tmp_path / "h.jsonl")
    assert [r.prompt_hash for r in by_vllm] == [r.prompt_hash for r in by_hf]
    assert [r.output_token_ids for r in by_vllm] == [r.output_token_ids for r in by_hf]
    assert [r.finish_reason for r in by_vllm] == [r.finish_reason for r in by_hf]
    assert all(r.output_tokens == len(r.output_token_ids) for r in by_vllm)
    assert sum(r.output_tokens for r in by_vllm) > 0  # something was generated to compare
    assert {r.backend for r in by_vllm} == {"vllm"} and {r.backend for r in by_hf} == {"hf"}
    assert [r.truncated for r in by_vllm] == [False, False, False, True]
    assert by_vllm[-1].prompt_tokens + 12 <= CONTEXT


def test_document_ten_times_the_context_is_cut_to_fit_and_flagged(llama_path):
    tokenizer = AutoTokenizer.from_pretrained(llama_path)
    template = prompt_template("B")
    huge = " ".join(f"Item {i}: the council approved the budget." for i in range(1500))
    assert len(tokenizer(huge, add_special_tokens=False).input_ids) >= 10 * CONTEXT
    fitted = fit_prompt(tokenizer, template, huge, "chat", CONTEXT, max_new_tokens=100, doc_id="huge")
    assert fitted.truncated
    assert CONTEXT - 100 - 8 <= len(fitted.ids) <= CONTEXT - 100  # cut to the budget, not far below
    text = tokenizer.decode(fitted.ids)
    assert "Item 0: the council" in text and "Item 1499" not in text
    assert text.endswith("The summary is:</s>\n<|assistant|>\n")  # the instruction tail survives
    short = fit_prompt(tokenizer, template, DOCUMENTS[0][1], "chat", CONTEXT, 100)
    assert not short.truncated
    with pytest.raises(ContextTooSmallError, match="'huge'.*max_new_tokens=1000"):
        fit_prompt(tokenizer, template, huge, "chat", CONTEXT, max_new_tokens=1000, doc_id="huge")


def test_chat_template_is_applied_once(llama_path):
    tokenizer = AutoTokenizer.from_pretrained(llama_path)
    assert resolve_layout(tokenizer, "llama") == "chat"
    ids = render_ids(tokenizer, prompt_template("A"), DOCUMENTS[0][1], "chat")
    for token in ("<s>", "<|system|>", "<|user|>", "<|assistant|>"):
        assert ids.count(tokenizer.convert_tokens_to_ids(token)) == 1, token
    assert ids[0] == tokenizer.bos_token_id
    # transformers' own tokenizing path of the same messages gives the same ids
    user = f"{INSTRUCTIONS['A']}\n\n{DOCUMENTS[0][1]}\n\nThe summary is:"
    messages = [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user}]
    expected = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                             return_dict=True)["input_ids"]
    assert ids == list(expected)


def test_opt_without_chat_template_gets_instruction_only_with_one_bos(opt_path):
    tokenizer = AutoTokenizer.from_pretrained(opt_path)
    layout = resolve_layout(tokenizer, "opt")
    assert layout == "opt-iml"
    ids = render_ids(tokenizer, prompt_template("C"), DOCUMENTS[1][1], layout)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[1:]) == f"{INSTRUCTIONS['C']}\n\n{DOCUMENTS[1][1]}\n\nThe summary is:"
    llama_style = tokenizer.decode(render_ids(tokenizer, prompt_template("C"), "doc", "llama"))
    assert llama_style.startswith("<s>[INST] <<SYS>>") and llama_style.count("<s>") == 1
    with pytest.raises(PromptError, match="no chat template"):
        resolve_layout(tokenizer, "opt", "chat")


def test_custom_templates_from_config():
    whole = prompt_template("mine", {"mine": "Document: {document}\nTL;DR:"})
    assert whole.user_message("x {y}") == "Document: x {y}\nTL;DR:"
    instruction = prompt_template("A", {"A": "Summarise:"})
    assert instruction.user_message("doc") == "Summarise:\n\ndoc\n\nThe summary is:"
    with pytest.raises(PromptError, match="'Z'.*A, B, C, mine"):
        prompt_template("Z", {"mine": "x"})


def test_identical_documents_are_generated_once_and_records_round_trip(llama_path, tmp_path):
    documents = [DOCUMENTS[0], DOCUMENTS[1], ("council-copy", DOCUMENTS[0][1])]
    out = tmp_path / "cell.jsonl"
    records = generate_cell(llama_path, documents, "A", config("hf", max_new_tokens=6), identity("tiny"),
                            out)
    assert [r.doc_id for r in records] == ["council", "rain", "council-copy"]
    assert records[2].duplicate_of == "council" and records[0].duplicate_of is None
    assert records[2].output_token_ids == records[0].output_token_ids
    assert read_generations(out) == records
    meta_text = meta_path(out).read_text()
    meta = json.loads(meta_text)
    assert (meta["documents"], meta["unique_documents"], meta["backend"]) == (3, 2, "hf")
    assert meta["output_tokens"] == records[0].output_tokens + records[1].output_tokens
    assert socket.gethostname() not in meta_text and str(tmp_path) not in meta_text


def test_bad_generation_lines_name_file_and_line(llama_path, tmp_path):
    good = generate_cell(llama_path, DOCUMENTS[:1], "A", config("hf", max_new_tokens=2),
                         identity("tiny"), tmp_path / "ok.jsonl")[0]
    bad = tmp_path / "bad.jsonl"
    line = good.model_dump(mode="json")
    del line["prompt_hash"]
    bad.write_text(good.model_dump_json() + "\n" + json.dumps(line) + "\n")
    with pytest.raises(RecordError, match=r"bad\.jsonl: line 2: prompt_hash: Field required"):
        read_generations(bad)
    bad.write_text("{not json\n")
    with pytest.raises(RecordError, match=r"bad\.jsonl: line 1"):
        read_generations(bad)


def test_bad_inputs_are_named(llama_path, tmp_path):
    with pytest.raises(GenerationError, match="'a' \\(#1\\): duplicate document id"):
        generate_cell(llama_path, [("a", "x"), ("a", "y")], "A", config("hf"), identity("t"),
                      tmp_path / "o.jsonl")
    with pytest.raises(GenerationError, match="no config.json"):
        generate_cell(tmp_path, [("a", "x")], "A", config("hf"), identity("t"), tmp_path / "o.jsonl")
    with pytest.raises(PrunescopeError, match="engine.dtype: 'bf16'"):
        generate_cell(llama_path, [("a", "x")], "A", config("hf", engine={"dtype": "bf16"}), identity("t"),
                      tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def test_pad_token_falls_back_to_eos(opt_path):
    tokenizer = AutoTokenizer.from_pretrained(opt_path)
    tokenizer.pad_token = None
    assert padding_token_id(tokenizer) == tokenizer.eos_token_id


def test_both_backends_stop_at_the_generation_config_stop_ids(llama_path, vllm_engine, tmp_path):
    """A stop id listed only in generation_config.json (like Llama 3's end-of-turn) ends the
    output in both backends, and is not part of the recorded ids."""
    pytest.importorskip("vllm")
    free_run = generate_cell(llama_path, DOCUMENTS[:1], "A", config("hf"), identity("t"),
                             tmp_path / "f.jsonl")[0]
    stop_at = next(i for i, token in enumerate(free_run.output_token_ids) if i >= 2
                   and token not in free_run.output_token_ids[:i])
    model = tmp_path / "model"
    shutil.copytree(llama_path, model)
    settings = json.loads((model / "generation_config.json").read_text())
    settings["eos_token_id"] = [settings["eos_token_id"], free_run.output_token_ids[stop_at]]
    (model / "generation_config.json").write_text(json.dumps(settings))
    for backend, llm in (("hf", None), ("vllm", vllm_engine(model))):
        record = generate_cell(model, DOCUMENTS[:1], "A", config(backend), identity("t"),
                               tmp_path / f"{backend}.jsonl", llm=llm)[0]
        expected = (free_run.output_token_ids[:stop_at], "stop")
        assert (record.output_token_ids, record.finish_reason) == expected


def test_cli_generates_a_cell_from_a_task(llama_path, tmp_path, capsys):
    from harness.cli.main import main
    from harness.hashing import hash_checkpoint

    out = tmp_path / "cli.jsonl"
    argv = ["generate", "--model", str(llama_path), "--task", "demo", "--limit", "3", "--backend", "hf",
            "--prompt", "C", "--max-new-tokens", "3", "--out", str(out)]
    assert main(argv) == 0
    records = read_generations(out)
    assert [r.doc_id for r in records] == ["demo-001", "demo-002", "demo-003"]
    assert {r.prompt_id for r in records} == {"C"} and all(r.output_tokens == 3 for r in records)
    assert records[0].model.checkpoint_hash == hash_checkpoint(llama_path)
    assert not records[0].model.source.startswith("/")
    assert main(["generate", "--model", str(tmp_path), "--task", "demo", "--out", str(out)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_generated_text_with_unicode_line_separators_round_trips(tmp_path):
    from harness import atomic
    from harness.records import GenerationRecord, ModelIdentity

    identity = ModelIdentity(name="m", source="m", checkpoint_hash="0" * 16)
    text = "first\u2028second\u0085third\x1cfourth\r\nfifth"  # str.splitlines breaks at each
    record = GenerationRecord(doc_id="d", prompt_id="A", prompt_hash="h", text=text,
                              output_token_ids=[1], prompt_tokens=3, output_tokens=1,
                              finish_reason="stop", truncated=False, backend="hf", model=identity,
                              sampling={})
    atomic.write_jsonl(tmp_path / "g.jsonl", [record, record])
    assert read_generations(tmp_path / "g.jsonl") == [record, record]


@pytest.mark.vllm
def test_generate_cli_defaults_resolve_one_dtype_in_both_backends(llama_path, tmp_path):
    """`prunescope generate` with default options: vLLM gets the dtype the transformers
    backend loads (the checkpoint's float32 on a CPU), so greedy ids agree token for token."""
    pytest.importorskip("vllm")
    import json

    from harness.cli.main import main
    from harness.generation.backends import resolve_dtype

    assert resolve_dtype("auto", llama_path) == json.loads((llama_path / "config.json").read_text()).get(
        "dtype", "float32")
    outputs = {}
    for backend in ("vllm", "hf"):
        out = tmp_path / f"{backend}.jsonl"
        assert main(["generate", "--model", str(llama_path), "--task", "demo", "--limit", "4",
                     "--backend", backend, "--max-new-tokens", "48", "--out", str(out)]) == 0
        outputs[backend] = [json.loads(line) for line in out.read_text().splitlines()]
        meta = json.loads(out.with_name(f"{backend}.meta.json").read_text())
        assert meta["dtype"] == resolve_dtype("auto", llama_path)
    ids = {b: [r["output_token_ids"] for r in records] for b, records in outputs.items()}
    assert len(ids["vllm"]) == 4 and sum(map(len, ids["vllm"])) > 4 * 8
    assert ids["vllm"] == ids["hf"]


def test_cpu_kv_cache_holds_eight_full_sequences(tmp_path, llama_path):
    """Hand-computed: a Llama-7B shape (32 layers, 32 KV heads of 128) in bfloat16 stores
    2 x 32 x 32 x 128 x 2 B = 512 KiB per token; 8 sequences of 4096 tokens are 16 GiB. The
    tiny Llama needs far less than 1 GiB, the floor."""
    from transformers import LlamaConfig

    from harness.generation.backends import cpu_kv_cache_gib

    LlamaConfig(hidden_size=4096, num_attention_heads=32, num_hidden_layers=32).save_pretrained(tmp_path)
    assert cpu_kv_cache_gib(tmp_path, 4096, "bfloat16") == 16
    assert cpu_kv_cache_gib(tmp_path, 4097, "bfloat16") == 17
    assert cpu_kv_cache_gib(tmp_path, None, "bfloat16") == 8  # its context: 2048 tokens
    assert cpu_kv_cache_gib(llama_path, 1024, "float32") == 1
