"""Identity fragments of the simulated persons, as a real CDP meets them.

Each person may have: CRM member records (``crm_id``; a share has a duplicate record sharing the
phone or the e-mail), a CN mobile phone, an e-mail, a WeChat unionid, app devices and web cookies.
Keys of different persons never collide, except the one documented, planted collision: a small
share of app users also use another person's device (a family tablet) and log in on it.

``make_identities`` draws the keys as numbers (vectorised); ``render_*`` turn them into the strings
written to the raw files, in mixed formats (phones '+86 138 0013 8000', '13800138000',
'86-13800138000', '+8613800138000'; e-mails in mixed case with stray spaces) and with a small share
of real typos that normalisation cannot fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from world.config import WorldConfig
from world.traits import Traits

GIVEN = ("wei", "fang", "jing", "min", "jun", "lei", "yan", "hui", "tao", "ming", "xin", "yu", "hao",
         "ting", "li", "na", "qiang", "lin", "emma", "james", "olivia", "kenji", "yuki", "sakura", "noah",
         "mei", "wen", "bo", "chen", "jie")
FAMILY = ("wang", "li", "zhang", "liu", "chen", "yang", "zhao", "huang", "zhou", "wu", "xu", "sun", "hu",
          "zhu", "gao", "lin", "he", "guo", "ma", "luo", "tan", "tanaka", "smith", "lee", "ng", "ong")
DOMAINS = ("qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com", "foxmail.com",
           "yahoo.co.jp", "icloud.com")
B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

APP, WEB = 0, 1


def _unique_ints(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    """n distinct random integers in [lo, hi), in random order."""
    if n > (hi - lo) // 4:
        raise ValueError(f"key space too small for {n} keys")
    out = rng.integers(lo, hi, n, dtype=np.int64)
    while True:
        _, first = np.unique(out, return_index=True)
        dup = np.ones(n, bool)
        dup[first] = False
        if not dup.any():
            return out
        out[dup] = rng.integers(lo, hi, int(dup.sum()), dtype=np.int64)


def _digits(x: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(x, pa.int64()), pa.string()), width, "0")


@dataclass
class Identities:
    """Every person's keys, as numbers (index = person_id unless said)."""

    phone_num: np.ndarray  # int64 11-digit mobile (0: none written)
    phone_typo: np.ndarray  # int64 a mistyped variant that collides with nobody
    email_num: np.ndarray  # int64 fixed-width number making the address unique
    email_given: np.ndarray  # int16
    email_family: np.ndarray  # int16
    email_domain: np.ndarray  # int16
    email_digits: int
    email_written: np.ndarray  # bool: an e-mail (valid or malformed) is on file
    unionid: np.ndarray  # (N,) 'S27' random suffix (the unionid is 'o' + it)
    unionid_in_crm: np.ndarray  # bool: the CRM record carries the unionid
    crm_person: np.ndarray  # (R,) owner of each CRM record; records 0..n_crm-1 are primaries
    crm_num: np.ndarray  # (R,) int64 member number
    crm_newest: np.ndarray  # (R,) bool: the record holding the person's current attributes
    dup_shares_phone: np.ndarray  # (R,) bool: a duplicate record carries the phone (else the e-mail)
    primary_crm: np.ndarray  # (N,) record index of the primary record (-1: guest)
    dev_owner: np.ndarray  # (M,) person owning the device / cookie
    dev_kind: np.ndarray  # (M,) APP or WEB
    dev_num: np.ndarray  # (M,) uint64
    dev_anonymous: np.ndarray  # (M,) bool: never logged in on (web cookies only)
    use_person: np.ndarray  # (U,) who uses the device in a session (sorted by person, kind)
    use_dev: np.ndarray  # (U,) device row
    use_kind: np.ndarray  # (U,)
    use_borrowed: np.ndarray  # (U,) bool: someone else's device (the planted shared device)
    app_start: np.ndarray  # (N,) first row of the person's app uses in use_*
    app_count: np.ndarray  # (N,)
    web_start: np.ndarray  # (N,)
    web_count: np.ndarray  # (N,)
    own_app: np.ndarray  # (N,) the person's first own app device row (-1: none)


def make_identities(traits: Traits, config: WorldConfig, rng: np.random.Generator) -> Identities:
    n = traits.n
    d = config.dirt
    has_crm = traits.has_crm
    phone_written = traits.key_on_file[:, 0] | traits.phone_malformed
    second = np.array([3, 5, 7, 8, 9], dtype=np.int64)
    raw = _unique_ints(rng, 0, 5 * 10**9, n)
    phone = (10**10 + second[raw // 10**9] * 10**9 + raw % 10**9).astype(np.int64)
    # typo: one digit (positions 3..10) changed; re-drawn until it collides with no real phone
    typo = phone.copy()
    todo = np.ones(n, bool)
    while todo.any():
        k = int(todo.sum())
        pos = 10 ** rng.integers(0, 8, k)
        digit = (phone[todo] // pos) % 10
        new = (digit + rng.integers(1, 10, k)) % 10
        typo[todo] = phone[todo] + (new - digit) * pos
        todo = np.isin(typo, phone)
    phone = np.where(phone_written, phone, 0)

    digits = max(7, int(np.ceil(np.log10(max(n, 1) * 40))))
    email_num = _unique_ints(rng, 10 ** (digits - 1), 10**digits, n)
    email_written = traits.key_on_file[:, 1] | traits.email_malformed
    unionid = rng.integers(0, 64, (n, 27), dtype=np.uint8)
    unionid = B64[unionid].view("S27").reshape(n)
    if len(np.unique(unionid)) != n:  # astronomically unlikely; keep the promise anyway
        raise RuntimeError("unionid collision; change the seed")
    unionid_in_crm = rng.random(n) < 0.8

    # CRM records: one primary per member, a duplicate for a share of them
    members = np.flatnonzero(has_crm)
    can_dup = phone_written[members] | email_written[members]
    dups = members[can_dup & (rng.random(len(members)) < d.crm_duplicate_share)]
    crm_person = np.concatenate([members, dups])
    crm_num = _unique_ints(rng, 10**8, 10**9, len(crm_person))
    dup_newest = rng.random(len(dups)) < 0.5
    newest = np.ones(len(crm_person), bool)
    is_dup_person = np.zeros(n, bool)
    is_dup_person[dups] = True
    newest[: len(members)] = True
    newest[np.flatnonzero(is_dup_person[members])] = ~dup_newest
    newest[len(members):] = dup_newest
    both = phone_written[dups] & email_written[dups]
    shares_phone = np.where(both, rng.random(len(dups)) < 0.6, phone_written[dups])
    dup_shares_phone = np.concatenate([np.zeros(len(members), bool), shares_phone])
    primary = np.full(n, -1, np.int64)
    primary[members] = np.arange(len(members))

    # devices: app installs (1 or 2) and web cookies (1 + Poisson); a few cookies stay anonymous
    act = config.activity
    has_app = traits.key_on_file[:, 3]
    n_app = np.where(has_app, 1 + (rng.random(n) < act.second_device_share), 0)
    n_web = 1 + rng.poisson(act.extra_cookies_mean, n)
    app_owner = np.repeat(np.arange(n), n_app)
    web_owner = np.repeat(np.arange(n), n_web)
    dev_owner = np.concatenate([app_owner, web_owner])
    dev_kind = np.concatenate([np.full(len(app_owner), APP, np.int8), np.full(len(web_owner), WEB, np.int8)])
    dev_num = _unique_ints(rng, 0, 2**62, len(dev_owner)).astype(np.uint64)
    dev_anon = (dev_kind == WEB) & (rng.random(len(dev_owner)) < d.anonymous_cookie_share)
    own_app = np.full(n, -1, np.int64)
    first_app = np.flatnonzero(np.r_[True, app_owner[1:] != app_owner[:-1]]) if len(app_owner) else []
    own_app[app_owner[first_app]] = np.asarray(first_app, dtype=np.int64)

    # planted collision: a share of app users also use another app user's device
    app_users = np.flatnonzero(has_app)
    borrowers = app_users[rng.random(len(app_users)) < d.shared_device_share]
    lenders = app_users[rng.integers(0, max(len(app_users), 1), len(borrowers))] if len(app_users) else borrowers
    ok = lenders != borrowers
    borrowers, lenders = borrowers[ok], lenders[ok]

    use_person = np.concatenate([dev_owner, borrowers])
    use_dev = np.concatenate([np.arange(len(dev_owner)), own_app[lenders]])
    use_kind = np.concatenate([dev_kind, np.full(len(borrowers), APP, np.int8)])
    use_borrowed = np.concatenate([np.zeros(len(dev_owner), bool), np.ones(len(borrowers), bool)])
    order = np.lexsort((use_dev, use_kind, use_person))
    use_person, use_dev, use_kind, use_borrowed = (use_person[order], use_dev[order], use_kind[order],
                                                   use_borrowed[order])
    app_count = np.bincount(use_person[use_kind == APP], minlength=n)
    web_count = np.bincount(use_person[use_kind == WEB], minlength=n)
    starts = np.searchsorted(use_person, np.arange(n), side="left")
    return Identities(
        phone_num=phone, phone_typo=typo, email_num=email_num,
        email_given=rng.integers(0, len(GIVEN), n).astype(np.int16),
        email_family=rng.integers(0, len(FAMILY), n).astype(np.int16),
        email_domain=rng.integers(0, len(DOMAINS), n).astype(np.int16),
        email_digits=digits, email_written=email_written, unionid=unionid, unionid_in_crm=unionid_in_crm,
        crm_person=crm_person, crm_num=crm_num, crm_newest=newest, dup_shares_phone=dup_shares_phone,
        primary_crm=primary, dev_owner=dev_owner, dev_kind=dev_kind, dev_num=dev_num, dev_anonymous=dev_anon,
        use_person=use_person, use_dev=use_dev, use_kind=use_kind, use_borrowed=use_borrowed,
        app_start=starts, app_count=app_count, web_start=starts + app_count, web_count=web_count,
        own_app=own_app,
    )


# ---------------------------------------------------------------------------------------------
# Rendering: numbers -> the strings written to raw files (vectorised with pyarrow compute)
# ---------------------------------------------------------------------------------------------
PHONE_FORMATS = ("plain", "spaced", "dashed", "plus")


def render_phone(num: np.ndarray, fmt: np.ndarray, malformed: np.ndarray) -> pa.Array:
    """Phones (n,) as written: format code per row (index into PHONE_FORMATS); a malformed phone
    is written with its last digit missing (10 digits)."""
    s = pc.cast(pa.array(num, pa.int64()), pa.string())
    s = pc.if_else(pa.array(malformed), pc.utf8_slice_codeunits(s, 0, 10), s)
    spaced = pc.binary_join_element_wise("+86 ", pc.utf8_slice_codeunits(s, 0, 3), " ",
                                         pc.utf8_slice_codeunits(s, 3, 7), " ", pc.utf8_slice_codeunits(s, 7, 11), "")
    dashed = pc.binary_join_element_wise("86-", s, "")
    plus = pc.binary_join_element_wise("+86", s, "")
    fmt = np.asarray(fmt)
    out = pc.if_else(pa.array(fmt == 1), spaced, s)
    out = pc.if_else(pa.array(fmt == 2), dashed, out)
    return pc.if_else(pa.array(fmt == 3), plus, out)


def render_email(ids: Identities, person: np.ndarray, style: np.ndarray, typo: np.ndarray,
                 malformed: np.ndarray) -> pa.Array:
    """E-mails of ``person`` (n,) as written. style: 0 lower, 1 Capitalised, 2 UPPER, 3 leading
    space, 4 trailing space. typo: last digit dropped. malformed: no '@'."""
    given = pa.array(np.asarray(GIVEN, dtype=object)[ids.email_given[person]], pa.string())
    family = pa.array(np.asarray(FAMILY, dtype=object)[ids.email_family[person]], pa.string())
    domain = pa.array(np.asarray(DOMAINS, dtype=object)[ids.email_domain[person]], pa.string())
    num = _digits(ids.email_num[person], ids.email_digits)
    num = pc.if_else(pa.array(typo), pc.utf8_slice_codeunits(num, 0, ids.email_digits - 1), num)
    at = pc.if_else(pa.array(malformed), pa.scalar(""), pa.scalar("@"))
    e = pc.binary_join_element_wise(given, ".", family, num, at, domain, "")
    out = pc.if_else(pa.array(style == 1), pc.utf8_capitalize(e), e)
    out = pc.if_else(pa.array(style == 2), pc.utf8_upper(e), out)
    out = pc.if_else(pa.array(style == 3), pc.binary_join_element_wise(" ", e, ""), out)
    return pc.if_else(pa.array(style == 4), pc.binary_join_element_wise(e, " ", ""), out)


def render_crm(num: np.ndarray, space: np.ndarray | None = None) -> pa.Array:
    """Member ids 'M' + 9 digits; ``space`` (bool) adds a stray leading or trailing space."""
    s = pc.binary_join_element_wise("M", _digits(num, 9), "")
    if space is None:
        return s
    lead = np.asarray(space) & (num % 2 == 0)
    trail = np.asarray(space) & (num % 2 == 1)
    s = pc.if_else(pa.array(lead), pc.binary_join_element_wise(" ", s, ""), s)
    return pc.if_else(pa.array(trail), pc.binary_join_element_wise(s, " ", ""), s)


def render_unionid(ids: Identities, person: np.ndarray) -> pa.Array:
    body = pa.array(ids.unionid[person], pa.binary(27)).cast(pa.binary()).cast(pa.string())
    return pc.binary_join_element_wise("o", body, "")


def render_device(ids: Identities, dev: np.ndarray) -> pa.Array:
    """Device ids: 'dev-' + 16 hex for app installs, 'ck-' + 16 hex for web cookies."""
    num = ids.dev_num[dev]
    shifts = np.arange(60, -1, -4, dtype=np.uint64)
    nib = ((num[:, None] >> shifts[None, :]) & np.uint64(15)).astype(np.intp)
    hexs = HEX[nib].view("S16").reshape(len(dev))
    body = pa.array(hexs, pa.binary(16)).cast(pa.binary()).cast(pa.string())
    prefix = pc.if_else(pa.array(ids.dev_kind[dev] == APP), pa.scalar("dev-"), pa.scalar("ck-"))
    return pc.binary_join_element_wise(prefix, body, "")
