"""Per-peer C-FIND and retrieve identifiers: the peer's quirk options applied to a checked Query.

`plan_find` (plans.py) turns one workstation C-FIND into the C-FIND requests
that one peer gets, and `retrieve_request` (retrieve.py) does the same for a
C-MOVE or C-GET identifier. The router re-applies the workstation's own keys
to every match afterwards (yicrouter.matching), so a request here may ask a
peer for more than the workstation asked for, never for less.

Each other module takes one concern. keys.py gives the level of each key,
options.py applies the key-level options, and relational.py handles
relational queries and parent UIDs. derived.py derives STUDY keys from the
study's series, truncation.py splits a request by date range for
max_matches, and matches.py repairs and collapses the matches.
"""

from yicrouter.dialect.derived import (
    DERIVABLE_STUDY_KEYS,
    derivation_request,
    derive_study_keys,
    derived_keys_for,
    fill_derived,
    needs_derivation,
    series_lacking_sop_class,
)
from yicrouter.dialect.keys import key_level
from yicrouter.dialect.matches import collapse_match, inherit_upper_keys, repair_unique_keys
from yicrouter.dialect.plans import plan_find
from yicrouter.dialect.relational import apply_inherited, parent_identity, with_parent_uids
from yicrouter.dialect.requests import PeerPlan, PeerRequest
from yicrouter.dialect.retrieve import RetrieveNotTranslatable, retrieve_request
from yicrouter.dialect.truncation import MAX_SPLIT_DEPTH, split_by_study_date

__all__ = [
    "DERIVABLE_STUDY_KEYS",
    "MAX_SPLIT_DEPTH",
    "PeerPlan",
    "PeerRequest",
    "RetrieveNotTranslatable",
    "apply_inherited",
    "collapse_match",
    "derivation_request",
    "derive_study_keys",
    "derived_keys_for",
    "fill_derived",
    "inherit_upper_keys",
    "key_level",
    "needs_derivation",
    "parent_identity",
    "plan_find",
    "repair_unique_keys",
    "retrieve_request",
    "series_lacking_sop_class",
    "split_by_study_date",
    "with_parent_uids",
]
