"""DP-IQA student vs teacher: images/s of scoring on the same device, in one run.

teacher = SD 1.5 VAE encoder + U-Net at t=1 (the four up-block maps, 1485-prompt context)
+ the QFD head, the frozen-backbone DP-IQA scorer that ``iqa-score`` runs for a qfd head;
student = ``pipelines.distill.student`` at EfficientNet-B7 (the paper's) and at a small trunk. All
at random init (speed does not depend on the weights), fp32 by default, on preprocessed
512 x 512 tensors (decoding is the same for both and left out, as in the paper's Table XII:
teacher 0.023 s, student 0.006 s per image on an A100, a ratio of 3.8).

    python bench/bench_student.py                      # CPU: 2 teacher images, 8 student
    python bench/bench_student.py --device cuda --teacher-images 32 --student-images 128
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from extract.forward import autocast
from extract.sd15 import build_sd15_unet
from heads.registry import build_head
from pipelines.distill.student import StudentConfig, build_student


def images_per_second(
    fn: Callable[[torch.Tensor], object], n: int, batch: int, device: torch.device, dtype: str
) -> tuple[float, float]:
    """(images/s, CPU seconds/image) of ``fn`` over ``n`` random 512 x 512 images.

    One warm-up batch first. CPU seconds (all threads of this process) measure the work
    done even when other processes share the cores; wall time is what a user waits.
    """
    x = torch.rand(batch, 3, 512, 512, device=device)  # (B, 3, H, W)
    steps = max(n // batch, 1)
    with torch.inference_mode(), autocast(device, dtype):
        fn(x)
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            fn(x)
        _sync(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return steps * batch / wall, cpu / (steps * batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def teacher(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """SD 1.5 (random init, SD 1.5 architecture) + QFD: pixels in [0, 1] -> quality."""
    sd = build_sd15_unet(None, random_init=True).to(device)
    qfd = build_head("qfd", sd.outputs).to(device).eval()
    params = sum(p.numel() for m in (sd.vae.encoder, sd.vae.quant_conv, sd.unet, qfd)
                 for p in m.parameters())
    print(f"teacher: SD 1.5 VAE encoder + U-Net + QFD, {params / 1e6:.1f} M parameters used")
    return lambda x: qfd(sd.forward_features(x))


def student(trunk: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    model = build_student(StudentConfig(trunk)).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"student {trunk}: {params / 1e6:.2f} M parameters")
    return lambda x: model(x)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--teacher-images", type=int, default=2)
    parser.add_argument("--student-images", type=int, default=8)
    parser.add_argument("--small-trunk", default="efficientnet_b0")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.dtype}, "
          f"batch {args.batch_size}, 512 x 512 input")
    rate: dict[str, tuple[float, float]] = {}
    for trunk in ("efficientnet_b7", args.small_trunk):
        fn = student(trunk, device)
        rate[trunk] = images_per_second(fn, args.student_images, args.batch_size, device,
                                        args.dtype)
        _report(rate[trunk], args.student_images)
    fn = teacher(device)
    rate["teacher"] = images_per_second(fn, args.teacher_images, args.batch_size, device,
                                        args.dtype)
    _report(rate["teacher"], args.teacher_images)
    for trunk in ("efficientnet_b7", args.small_trunk):
        wall = rate[trunk][0] / rate["teacher"][0]
        cpu = rate["teacher"][1] / rate[trunk][1]
        print(f"speed ratio student {trunk} / teacher: {wall:.1f}x wall, {cpu:.1f}x CPU time "
              "(paper, A100: 3.8x for B7)")


def _report(rate: tuple[float, float], n: int) -> None:
    print(f"  {rate[0]:.4f} images/s ({1 / rate[0]:.2f} s/image wall, {rate[1]:.2f} CPU "
          f"s/image) over {n} images")

if __name__ == "__main__":
    main()
