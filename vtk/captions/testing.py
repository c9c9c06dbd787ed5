"""Tiny, randomly initialised transformers models built offline, saved as local folders.

They run the real ``hf:`` code paths (processor, generate, decode) in milliseconds, for tests
and for the captioning benchmark. Their words are random: only the plumbing is real.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "a an the and of in on at to is it its then first finally video frame shows showing "
    "small large red green blue yellow purple orange circle square triangle shape moves "
    "left right up down top bottom centre middle grows shrinks spins blinks bounces jumps "
    "person man woman dog cat car bike street road tree sky water ball table room people "
    "running walking sitting standing riding playing holding looking white black grey "
    "summarize these captions into one sentence that describes what happens summary s "
    "0 1 2 3 4 5 6 7 8 9 . :"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer(folder: str | Path):
    """A word-piece (BERT-style) tokenizer over a small vocabulary written to ``folder``."""
    from transformers import BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + list(dict.fromkeys(WORDS))) + "\n")
    # transformers 5 ignores vocab_file= in the constructor (an empty tokenizer): load the folder
    tok = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    assert len(tok) == len(SPECIALS) + len(set(WORDS)), "tokenizer vocabulary did not load"
    return tok


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)  # random weights, but the same ones every time


def _vision(image_size: int = 32) -> dict:
    return dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2)


def _image_processor(image_size: int = 32):
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": image_size, "width": image_size})


def tiny_blip(folder: str | Path, seed: int = 0) -> Path:
    _seed(seed)
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

    folder = Path(folder)
    tok = tiny_tokenizer(folder / "tok")
    tok.add_special_tokens({"bos_token": "[DEC]"})
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=64,
                bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id)
    config = BlipConfig(text_config=text, vision_config=_vision(), projection_dim=32)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BlipProcessor(image_processor=_image_processor(), tokenizer=tok).save_pretrained(folder)
    return folder


def tiny_blip2(folder: str | Path, seed: int = 1) -> Path:  # seed 0 emits only [CLS] on some
    _seed(seed)
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    folder = Path(folder)
    tok = tiny_tokenizer(folder / "tok")
    num_query = 4
    processor = Blip2Processor(image_processor=_image_processor(), tokenizer=tok,
                               num_query_tokens=num_query)  # adds the <image> token
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    text = dict(model_type="opt", vocab_size=len(processor.tokenizer), hidden_size=32,
                ffn_dim=64, num_hidden_layers=2, num_attention_heads=2, word_embed_proj_dim=32,
                max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    qformer = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                   num_hidden_layers=2, num_attention_heads=2, encoder_hidden_size=32)
    # image_token_index must be set, or the model cannot find where the image goes
    config = Blip2Config(vision_config=_vision(), qformer_config=qformer, text_config=text,
                         num_query_tokens=num_query, image_token_index=image_token)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_git(folder: str | Path, seed: int = 0) -> Path:
    _seed(seed)
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    folder = Path(folder)
    tok = tiny_tokenizer(folder / "tok")
    config = GitConfig(vision_config=_vision(), vocab_size=len(tok), hidden_size=32,
                       intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    GitForCausalLM(config).save_pretrained(folder)
    improc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    GitProcessor(image_processor=improc, tokenizer=tok).save_pretrained(folder)
    return folder


def tiny_gpt2(folder: str | Path, seed: int = 0) -> Path:
    _seed(seed)
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    tok = tiny_tokenizer(folder)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=512,
                        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                        pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_t5(folder: str | Path, seed: int = 2) -> Path:  # seeds 0 and 1 only emit padding
    _seed(seed)
    from transformers import T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    tok = tiny_tokenizer(folder)
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=16, d_ff=64, num_layers=2,
                      num_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


BUILDERS = {"blip": tiny_blip, "blip2": tiny_blip2, "git": tiny_git, "gpt2": tiny_gpt2,
            "t5": tiny_t5}
