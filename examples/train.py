"""Fine-tune MMFNet on any `datasets` data with the Trainer — on one process, or under `torchrun` (DDP).

    python examples/train.py --dataset data/avdigits-agree --output_dir outputs/agree \
        --vision_encoder conv --text_encoder sentence-transformers/all-MiniLM-L6-v2 --audio_encoder conv \
        --fusion_type transformer --freeze_text true --num_train_epochs 5

    torchrun --nproc_per_node 2 examples/train.py ...same arguments...   # DDP (gloo on CPU, nccl on GPU)

`python examples/train.py --help` lists every option. The logic lives in `modeling_mmfnet/training_mmfnet.py`
(`main(argv) -> int`), so other front ends (a CLI, a notebook) run exactly the same code.
"""

import sys

from modeling_mmfnet.training_mmfnet import main

if __name__ == "__main__":
    sys.exit(main())
