"""highdicom's "is this attribute in that IOD" lookups, answered once per question.

highdicom answers ``is_attribute_in_iod(attribute, sop_class_uid)`` by walking every module of
the IOD and every attribute of each module in its bundled copy of the standard (about 1 ms a
call on this project's CPU). It asks about 100 times per exam: Content Date / Time for every
object it builds, and the multi-frame and pixel-data checks for every image an SC, SEG, SR or
presentation state references, which was about 0.1 s of the writers' 0.7 s per full-size exam.
The answer depends only on the arguments and that bundled table, so :func:`install` puts a
memoised version in place of highdicom's (in ``highdicom._standard_utils``, whose multi-frame
and pixel-data checks call it, and in the modules that imported the name). A highdicom release
that renames the function or its callers leaves highdicom as it is (the outputs are the same,
only slower), logs a warning, and fails ``tests/test_writers.py``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import highdicom
import highdicom._standard_utils as standard_utils
import highdicom.base
import highdicom.sr.content

logger = logging.getLogger(__name__)

#: highdicom's own function, kept for the equivalence test
ORIGINAL: Callable[..., bool] = standard_utils.is_attribute_in_iod
#: the modules that hold the name ``is_attribute_in_iod`` (imported from _standard_utils)
USERS = (standard_utils, highdicom.base, highdicom.sr.content)


@functools.cache
def _answer(attribute: str, sop_class_uid: str, exclude: tuple[str, ...] | None) -> bool:
    return bool(ORIGINAL(attribute, sop_class_uid, exclude_path_elements=exclude))


def is_attribute_in_iod(
    attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None
) -> bool:
    """``highdicom._standard_utils.is_attribute_in_iod``, memoised (same arguments, same
    answer, same KeyError for an unknown SOP class: errors are not cached)."""
    exclude = None if exclude_path_elements is None else tuple(exclude_path_elements)
    return _answer(str(attribute), str(sop_class_uid), exclude)


def install() -> bool:
    """Put the memoised lookup in place in highdicom (idempotent); False, with a warning and
    nothing changed, when highdicom's modules do not hold the function this module knows."""
    for module in USERS:
        current = getattr(module, "is_attribute_in_iod", None)
        if current is not ORIGINAL and current is not is_attribute_in_iod:
            logger.warning(
                "highdicom %s: %s.is_attribute_in_iod is not the function mammo-node knows; "
                "its IOD lookups are left uncached (the outputs are the same, slower).",
                highdicom.__version__,
                module.__name__,
            )
            return False
    for module in USERS:
        module.is_attribute_in_iod = is_attribute_in_iod  # type: ignore[attr-defined]
    return True


def installed() -> bool:
    return all(getattr(m, "is_attribute_in_iod", None) is is_attribute_in_iod for m in USERS)
