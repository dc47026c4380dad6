"""Which transfer syntaxes the node accepts, in the order it prefers them.

pynetdicom's acceptor takes, for each proposed presentation context, the first syntax of *our*
list that the requestor also proposed (``pynetdicom.presentation.negotiate_as_acceptor`` walks
the acceptor's list). So the order below is the policy:

1. lossless compressed syntaxes that an installed pixel decoder reads (kept as sent: no
   conversion, smaller files);
2. Explicit VR Little Endian, then Implicit VR Little Endian (then the retired Big Endian);
3. lossy syntaxes last: taken only when the requestor proposed nothing lossless in that context.

A syntax that no installed decoder reads (JPEG XL, JPEG 2000 Part 2 multi-component, video,
JPIP references) is never accepted: refusing the context lets the sender fall back to another
context or convert, instead of the node acknowledging pixels it cannot read. Availability is
asked of pydicom's pixel decoders at run time, so installing a plugin widens the list.
Deflated Explicit VR is refused too: the receive path checks a file's element lengths against
its size on disk, which a deflated stream does not allow (every C-STORE would fail 0xC210).
"""

from __future__ import annotations

import functools
import logging

from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14
from pynetdicom import ALL_TRANSFER_SYNTAXES

logger = logging.getLogger(__name__)

JPEG_XL_LOSSLESS = UID("1.2.840.10008.1.2.4.110")

#: Lossless compressed syntaxes, most preferred first (what modalities and PACS send).
LOSSLESS_COMPRESSED: tuple[UID, ...] = (
    JPEGLosslessSV1,
    JPEGLosslessP14,
    JPEGLSLossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    RLELossless,
    JPEG2000MCLossless,
    JPEG_XL_LOSSLESS,
)
UNCOMPRESSED: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def decoder_available(syntax: UID) -> bool:
    """Can an installed pydicom pixel decoder read pixel data in ``syntax``?"""
    if not syntax.is_compressed:
        return True
    try:
        return bool(get_decoder(syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def is_lossy(syntax: UID) -> bool:
    return syntax.is_compressed and syntax not in LOSSLESS_COMPRESSED


@functools.cache
def preferred_syntaxes() -> tuple[UID, ...]:
    """The accepted transfer syntaxes in the order of preference described above (asked of
    the decoders once per process)."""
    known = [UID(ts) for ts in ALL_TRANSFER_SYNTAXES]
    readable = [ts for ts in known if decoder_available(ts)]
    lossless = [ts for ts in LOSSLESS_COMPRESSED if ts in readable]
    lossy = [ts for ts in readable if is_lossy(ts)]
    ordered = [*lossless, *UNCOMPRESSED, ExplicitVRBigEndian, *lossy]
    refused = sorted(str(ts) for ts in known if ts not in ordered)
    logger.debug("transfer syntaxes refused (no installed decoder): %s", ", ".join(refused))
    return tuple(ordered)
