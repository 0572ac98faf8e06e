"""sigma-cli (``sigma ...``) with every data set pySigma and the SigmaHQ validators would
download read from the files of tests/sigma/data instead, their caches in a private
directory. Run by the Sigma venv's Python (scripts/test makes it); CI has no network
beyond the package registries, and a check must not depend on GitHub's availability.

    python sigma_offline.py CACHE_DIR check --fail-on-issues -c rules/sigma-validation.yml rules/sigma

What each file stands for:
  attack-subset.json   the ATT&CK Enterprise objects rules/sigma's tags name (TA0040,
                       T1496, T1499), in STIX as MITRE publishes it; a tag outside this
                       subset is reported as unknown, which is the point of the check
  d3fend-empty.json    no D3FEND data (rules/sigma has no d3fend tags)
  sigmahq-taxonomy.json
                       the logsource linux/mlockaudit and its field names (the ECS
                       fields mlockaudit writes): a rule over a field mlockaudit never
                       writes fails the check (SigmahqInvalidFieldnameValidator)
  sigmahq-filename.json
                       the file name prefix of that logsource: lnx_mlockaudit_
  sigmahq-windows-*.json
                       the Windows tables, empty (no Windows logsource here)
"""

import os
import sys

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def offline(cache_dir):
    from sigma.data import mitre_attack, mitre_d3fend
    from sigma.validators.sigmahq.data import (data_filename, data_taxonomy,
                                               data_windows_eventid, data_windows_provider)
    for module, name in ((mitre_attack, "attack-subset.json"), (mitre_d3fend, "d3fend-empty.json"),
                         (data_taxonomy, "sigmahq-taxonomy.json"),
                         (data_filename, "sigmahq-filename.json"),
                         (data_windows_eventid, "sigmahq-windows-eventid.json"),
                         (data_windows_provider, "sigmahq-windows-provider.json")):
        module.set_cache_dir(os.path.join(cache_dir, name))   # before set_url: it clears
        module.set_url(os.path.join(DATA, name))


if __name__ == "__main__":
    offline(sys.argv[1])
    from sigma.cli.main import main
    sys.argv = ["sigma"] + sys.argv[2:]
    main()
