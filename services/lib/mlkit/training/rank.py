"""``python -m services.lib.mlkit.training.rank RANK PAYLOAD [FD]``: one data-parallel rank (see distributed)."""
import sys

from services.lib.mlkit.training.distributed import rank_process

if __name__ == "__main__":
    rank_process(sys.argv[1:])
