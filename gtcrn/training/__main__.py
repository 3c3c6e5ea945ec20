"""``python -m gtcrn.training --config ...``: ``gtcrn train`` as a module, for torchrun
(``torchrun --nproc_per_node N -m gtcrn.training --config configs/gtcrn-g32.yaml``)."""

import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
