"""A blind Label Studio export's keys file, as a user may hand it back (no Label Studio needed)."""

import pytest


def test_a_broken_blind_keys_file_is_one_line(tmp_path):
    from densedpo.errors import DenseDPOError
    from review.label_studio import BlindKeys

    (tmp_path / "k.json").write_text("{not json")
    with pytest.raises(DenseDPOError, match=r"--keys .*k\.json is not a blind export's keys file"):
        BlindKeys(tmp_path / "k.json")
