"""ltrr's event contracts: JSON Schema files, validation, typed records and the orjson codec."""

from schemas.contracts import Contract
from schemas.exceptions import ContractError, LtrrError
from schemas.records import SearchImpression, UserAction
from schemas.validation import Rejection, decode

__all__ = [
    "Contract",
    "ContractError",
    "LtrrError",
    "Rejection",
    "SearchImpression",
    "UserAction",
    "decode",
]
