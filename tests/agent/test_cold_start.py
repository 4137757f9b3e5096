"""The agent and its CLI start without the data libraries: every `jupyter handoff` command and
every agent start would pay for them (pandas and pyarrow alone ~0.5 s). Model and data code
imports them where it runs: in the check and serving workers, and in the monitor."""

import json
import subprocess
import sys

PROBE = """
import json, sys
import handoff_agent.agent, handoff_agent.cli
# and what HandoffAgent.build imports for every agent, local or central
import handoff_agent.monitor.service, handoff_agent.watch.service, handoff_agent.serving.server
import handoff_agent.serving.deploy, handoff_agent.serving.canary_guard
import handoff_agent.serving.validation, handoff_agent.watch.revalidate
print(json.dumps(sorted(sys.modules)))
"""


def test_the_agent_and_cli_import_no_data_library():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = ("pandas", "pyarrow", "sklearn", "scipy", "matplotlib", "skops", "onnxruntime")
    assert [m for m in loaded if m.split(".")[0] in heavy] == []
