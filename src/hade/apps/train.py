"""The training application: `torchrun --nproc_per_node N -m hade.train --data DIR --out RUN [--config FILE] ...`

An application (it parses arguments), so it lives here and not in the library package hade.train, whose
`__main__` only forwards to it. The arguments are those of `hade train` (parsed by `hade.cli`'s own parser,
an application module too); the process joins the torch.distributed group that torchrun describes in its
environment (gloo on CPU, nccl on CUDA) and trains data-parallel (see hade.train.distributed).
Run without torchrun it trains in one process, as `hade train`.
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

from hade.errors import HadeError


def main(argv: Sequence[str] | None = None) -> int:
    import torch.distributed as dist

    from hade.cli import build_parser, train_config_from_args
    from hade.train import distributed as ddp
    from hade.train.trainer import train

    args = build_parser().parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    ctx = ddp.init_from_env()
    try:
        summary = train(args.data, args.out, train_config_from_args(args), resume=not args.no_resume,
                        progress=not args.quiet)
        if ctx.is_main:
            print(json.dumps(summary, indent=2))
        return 0
    except HadeError as e:
        print(f"hade.train (rank {ctx.rank}): error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hade.train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()

