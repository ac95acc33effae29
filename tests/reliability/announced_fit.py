"""``vzero fit`` with the command line it is given, printing a line as each win-rate evaluation starts, so that a crash
test can kill the run during one. Nothing else differs from the ``vzero`` command."""

import sys

from vzero.__main__ import main
from vzero.callbacks.winrate import WinRateEvaluation

STARTS = "evaluation starts at step"

_evaluate = WinRateEvaluation.evaluate


def _announced(self, trainer, *args, **kwargs):
    print(f"{STARTS} {trainer.global_step}", flush=True)
    return _evaluate(self, trainer, *args, **kwargs)


if __name__ == "__main__":
    WinRateEvaluation.evaluate = _announced
    sys.argv = ["vzero", "fit", *sys.argv[1:]]
    main()
