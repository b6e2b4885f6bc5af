"""Where the shared test fixtures live (imported by tests; conftest modules cannot be imported by name)."""

import os
from pathlib import Path

# shared/fixtures sits beside the checkout; POLYRET_FIXTURES overrides, /work/shared is this workplace's copy.
_CANDIDATES = [os.environ.get("POLYRET_FIXTURES", ""), Path(__file__).resolve().parents[2] / "shared" / "fixtures",
               "/work/shared/fixtures"]
FIXTURES = next((Path(c) for c in _CANDIDATES if c and Path(c).is_dir()), Path(_CANDIDATES[1]))
T5X_FIXTURE = FIXTURES / "t5x_retrieval_de_t5_tiny" / "checkpoint_1000"
