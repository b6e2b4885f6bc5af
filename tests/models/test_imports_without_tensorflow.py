"""A GPU/TPU VM can build models, plan, and evaluate without TensorFlow: these modules import neither
TensorFlow nor seqio at module level (checked in a fresh interpreter, as the job would start)."""

import subprocess
import sys

MODULES = ["polyret.models.attention", "polyret.models.layer_stack", "polyret.models.t5", "polyret.models.bert",
           "polyret.models.distilbert", "polyret.models.towers", "polyret.models.losses",
           "polyret.models.retrieval_model", "polyret.models.model_folder", "polyret.models.hf",
           "polyret.models.colbert_x", "polyret.retrieval.pipeline", "polyret.retrieval.metrics",
           "polyret.jobs.encode", "polyret.jobs.evaluate", "polyret.jobs.plan"]


def test_model_and_job_modules_import_without_tensorflow():
    code = ("import sys\n"
            f"for name in {MODULES!r}:\n"
            "    __import__(name)\n"
            "    leaked = [m for m in ('tensorflow', 'seqio') if m in sys.modules]\n"
            "    assert not leaked, (name, leaked)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
