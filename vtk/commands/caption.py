"""`vtk caption DIR --as NAME`: a caption layer for a shard set, beside its tars."""

from __future__ import annotations

import click

from vtk.commands.options import DEVICE, vlm_options


@click.command("caption")
@click.argument("folder")
@click.option("--as", "name", required=True, metavar="NAME",
              help="The layer's name: vtk train --captions NAME trains on it.")
@click.option("--fine-model", default=None,
              help="The clip caption: a video captioner vlm:ID, or a frame captioner "
                   "(shapes | tagger | hf:ID) merged by --summarizer.")
@click.option("--coarse-model", default=None,
              help="A middle-frame caption as well: shapes | tagger | hf:ID.")
@click.option("--summarizer", default="rules", show_default=True,
              help="Merges frame captions (rules | hf:ID); with a vlm: model, hf:ID merges its "
                   "windows instead of the model itself.")
@click.option("--fine-fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frames per second a frame captioner sees for the fine caption.")
@vlm_options
@click.option("--device", default="auto", show_default=True, type=DEVICE,
              help="auto, cpu, cuda, cuda:N (under torchrun: each rank its own GPU).")
@click.option("--overwrite", is_flag=True,
              help="Caption again shards whose sidecar was written with other settings.")
@click.option("--no-cache", is_flag=True,
              help="No caption cache: a killed run captions its last shard's clips again.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def command(folder, name, fine_model, coarse_model, summarizer, fine_fps, vlm_fps, vlm_window,
            vlm_mode, vlm_max_tokens, vlm_prompt, vlm_batch, device, overwrite, no_cache,
            quiet):
    """Caption the clips of the shard set in FOLDER (a folder or URL) into the layer NAME:
    FOLDER/captions/NAME/SHARD.parquet per shard, keyed by __key__. The tars are not
    rewritten. Shards already captioned with the same settings are skipped; a killed run
    continues where it stopped. Under torchrun the shards are split over the ranks.

    \b
    Examples:
      vtk caption shards/train --as qwen --fine-model vlm:Qwen/Qwen2.5-VL-7B-Instruct
      vtk caption shards/train --as smol --fine-model vlm:/models/SmolVLM2-2.2B-Instruct \\
          --vlm-window 64 --vlm-mode diff
      torchrun --nproc-per-node 8 -m vtk caption shards/iv --as qwen --fine-model vlm:/m/qwen
      vtk train shards/train --captions qwen --out runs/qwen
    """
    from vtk.captions.layer import caption_set
    from vtk.shards.build_set import vlm_settings

    vlm = vlm_settings(**click.get_current_context().params)
    s = caption_set(folder, name, coarse_model=coarse_model, fine_model=fine_model,
                    summarizer=summarizer, fine_fps=fine_fps, vlm=vlm, device=device,
                    overwrite=overwrite, cache=not no_cache, progress=not quiet)
    if s["rank"] != 0 or quiet:
        return
    from vtk.commands.shard import captioner_line

    click.echo(f"layer {name}: {s['samples']} clips in {s['shards']} shards "
               f"({s['shards_captioned']} captioned now, {s['shards_skipped']} already done; "
               f"{s['cache']['hits']} clips from the cache) in {s['seconds']:.1f} s")
    click.echo(f"  captions: {s['captioned']['text']}, failures: {s['failures']}")
    for model, c in s["captioners"].items():
        click.echo(f"  {model}: {captioner_line(c)}")
    click.echo(f"train on it: vtk train {folder} --captions {name} --out RUN")
