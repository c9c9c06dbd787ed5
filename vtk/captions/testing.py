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


# --- video language models (vlm:) ---------------------------------------------------------------

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"]
SMOL_SPECIALS = ["<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                 "<global-img>", "<image>", "<video>"]
# the chat templates the real models ship, cut down to what a caption request uses: one user
# turn of a video (or none) and a text, then the assistant's turn
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SMOL_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}{{ ': ' }}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}"
    "{{ '<video>' }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")
NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty "
                "sixty seventy eighty ninety hundred").split()


def word_tokenizer(specials: list[str], eos: str):
    """A word-level tokenizer trained with the ``tokenizers`` library on the words of vtk's
    prompts, the processors' own video texts (SmolVLM: "You are provided the following series
    of ... frames ... Frame from 00:03:") and the numbers in them; words split at white space
    and punctuation. Wrapped as a transformers fast tokenizer with ``eos`` as its end token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vtk.captions import vlm

    corpus = [" ".join(WORDS), " ".join(NUMBER_WORDS), vlm.DEFAULT_PROMPT, vlm.DIFF_PROMPT,
              vlm.SUMMARY_PROMPT, "User Assistant user assistant system",
              "You are provided the following series of frames from a [H:MM:SS] video. "
              "Frame from", " ".join(f"{i:02d}" for i in range(100)), "- { } ( )"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(
        special_tokens=["<unk>", "<pad>", *specials]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token=eos)


def _text_config(tok, **extra) -> dict:
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **extra)


def _save_vlm(model, processor, tok, folder: Path) -> Path:
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_qwen25_vl(folder: str | Path, seed: int = 0, side: int = 32) -> Path:
    """Qwen2.5-VL: 8 px patches merged 2 x 2, 2 frames a temporal patch; the video processor's
    pixel budget makes frames ``side`` x ``side`` at most (4 tokens a frame pair at 32 px)."""
    _seed(seed)
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    tok = word_tokenizer(QWEN_SPECIALS, eos="<|im_end|>")
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    # rotary sections (temporal, height, width) summing to half the head dim (16)
    text = _text_config(tok, bos_token_id=ids["<|endoftext|>"], rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32,
                  window_size=16, fullatt_block_indexes=[1], tokens_per_second=2)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                              image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"],
                              vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"])
    pixels = dict(patch_size=8, merge_size=2, temporal_patch_size=2,
                  size={"shortest_edge": 16 * 16, "longest_edge": side * side})
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                                    video_processor=Qwen2VLVideoProcessor(**pixels),
                                    tokenizer=tok, chat_template=QWEN_TEMPLATE)
    return _save_vlm(Qwen2_5_VLForConditionalGeneration(config), processor, tok, folder)


def tiny_smolvlm(folder: str | Path, seed: int = 0, side: int = 32) -> Path:
    """SmolVLM (SmolVLM2's architecture): every frame one ``side`` px square tile of 4 tokens,
    each after its timestamp in the prompt ("Frame from 00:03:")."""
    _seed(seed)
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    folder = Path(folder)
    tok = word_tokenizer(SMOL_SPECIALS, eos="<end_of_utterance>")
    ids = {s: tok.convert_tokens_to_ids(s) for s in SMOL_SPECIALS}
    text = _text_config(tok, model_type="llama", bos_token_id=ids["<|im_start|>"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=side, patch_size=side // 4)
    config = SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=2,
                           image_token_id=ids["<image>"], pad_token_id=tok.pad_token_id)
    edge = {"longest_edge": side}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=edge, max_image_size=edge,
                                              do_image_splitting=False),
        video_processor=SmolVLMVideoProcessor(size=edge, max_image_size=edge),
        tokenizer=tok, image_seq_len=4, chat_template=SMOL_TEMPLATE)
    return _save_vlm(SmolVLMForConditionalGeneration(config), processor, tok, folder)


VLM_BUILDERS = {"qwen2.5-vl": tiny_qwen25_vl, "smolvlm": tiny_smolvlm}
