import sys
from pathlib import Path

# chat_server and sap_helpers live with the synthesis tests; the job tests reuse them.
sys.path.insert(0, str(Path(__file__).parents[1] / "synthesis"))
