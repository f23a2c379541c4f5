"""ltrr's event contracts: JSON Schema files, validation, typed records and the orjson codec."""

from ltrr.schemas.contracts import Contract
from ltrr.schemas.exceptions import ContractError, LtrrError
from ltrr.schemas.records import SearchImpression, UserAction
from ltrr.schemas.validation import Rejection, decode

__all__ = [
    "Contract",
    "ContractError",
    "LtrrError",
    "Rejection",
    "SearchImpression",
    "UserAction",
    "decode",
]
