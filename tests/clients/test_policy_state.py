"""The site's state folder (ledgers, split, caches, log) is created owner-only."""

import os
import stat

from clients.policy import SitePolicy


def test_the_state_folder_is_created_owner_only(tmp_path):
    folder = SitePolicy(state_dir=str(tmp_path / "hospital" / "state")).state_folder()
    assert os.path.isdir(folder) and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
