"""Beneath a Steel Sky, CD version 0.0372 (Debian package ``beneath-a-steel-sky``): 3,579 voice files
(~2 h) RNC-packed in ``sky.dsk``; the game's scripts name 39 speakers for ~3,350. Facts from ScummVM's
``engines/sky`` files, named with each.

Files (``disk.cpp``, ``struc.h``): ``sky.dnr`` is a u32 LE count, then 8-byte entries: number (u16),
offset (u24; bit 23: in 16-byte units), flags (u24; bits 0-21 the stored size, bit 22 "drop the header",
bit 23 "stored unpacked"). A file starts with a 22-byte header (11 u16 LE); bit 7 of word 0 marks RNC
data behind it, unpacked by ``speechid.corpora.rnc`` (RNC method 1, ScummVM's ``rnc_deco.cpp``).

Speech (``sound.cpp``, ``intro.cpp``): text t is file ``50000 + [0, 600, 1100, 2430, 3380, 4530, 5080,
5230][t >> 12] + (t & 0xFFF)``, unsigned 8-bit mono at 11,025 Hz after the header. Intro voices are
files 59500-59672 (``CDV_*``), speakers as ScummVM's comments give them (guard and pilot unlabelled).

Who speaks (``logic.cpp``, ``logic.h``, ``compact.cpp``): script modules are files 60400-60406 of u16
LE words, a script table (word 0 its length), then bytecode (``Logic::script``). mcodes 35-38 (fnSpeakMe,
-MeDir, -Wait, -WaitDir) take speaker id, text and talk animation; mcode 70 (fnAskThis) offers a line
the player picks and Foster says. ``sky.cpt`` names the compacts. A speaker held in a variable is (1)
the one compact every script stores there; (2) Foster, for CUR_ID (variable 12) in a script offering
choices; (3) else what its animation names: a talk-table index (compact 0xBC, CPT_TALK_TABLE_LIST; the
engine adds the mega set, and 2 per direction in the -Dir calls) of animations named for their character
(``lamb_normal``). The player's partner (variable 120) is never Foster; a partner line without animation
takes the one character the script's other partner lines name. Merged: Jobsworth's scenes (one speech
colour, ``skydefs.h``), Officer Blunt (``sc31_guard``, ``compact.cpp``), Mrs Piermont's phone animation
0x9B (``logic.cpp``). A line named for two characters, or none, is unlabelled.

Characters are not actors: one actor may voice several (the court, the bar); two compacts of one name in
two scenes stay apart (``sc36_gallagher``, ``gallagher``) where they may differ.
"""

from __future__ import annotations

import bisect
import os
import re
import struct
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from speechid.audio import encode
from speechid.corpora.rnc import rnc_unpack
from speechid.corpora.sources import SourceClip, SourceFailure
from speechid.errors import ConfigError

PACKAGE = "beneath-a-steel-sky"
DEFAULT_ROOT = "/usr/share/scummvm/beneath-a-steel-sky"
RELEASE = "bass"
LOCALE = "en"
RATE = 11_025
CAVEAT = "Speakers are game characters, not actors: one actor may voice several characters."

HEADER = 22  # the data-file header before every stored file
SPEECH_BASE = 50_000
SECTION_START = (0, 600, 1100, 2430, 3380, 4530, 5080, 5230)  # text section -> first speech file - 50000
MODULES = range(60_400, 60_407)
TALK_TABLE = 0xBC
CUR_ID, PARTNER = 12, 120  # script variables: the compact running the script; who the player talks to
SPEAK, SPEAK_DIR, WAIT, WAIT_DIR, ASK = 35, 36, 37, 38, 70  # mcode numbers
_INTRO = {  # intro voice file - 59500, by speaker (intro.cpp's comments)
    "foster": "0 14 15 18 25 31 34 41 45 46 56 74 76 79 81 88 96 100 102 106 110 112 113 114 116 129 130 133 "
    "139 142 144 149 154 156 159 160 163 165 166 168 171 172",
    "shaman": "4 5 7 8 10 11 13 20 23 28 35 58 83 87 90 118 121 122 131",
    "joey": "27 36 39 115",
    "reich": "51 54 62 65 66 67 68 70 124 127 128 135 148 155 164",
    "": "61 94 63 132 147 167 169 170",  # two unplayed files; the guard and the pilot, not told apart
}
INTRO = {59_500 + int(n): who for who, nums in _INTRO.items() for n in nums.split()}
_ARGS = {0: 1, 2: 1, 5: 1, 6: 1, 9: 1, 11: 2, 15: 1, 16: 1, 18: 1}  # words after each opcode (14: a table)
_CHARACTERS = [  # compact or talk-animation name -> character; names not listed identify nobody
    (r"foster|fost.*|(sml|big)fost_conv|big_f_.*|rad_(up|down|left|right)|sc42_fos_talk_.|sc81_fos_sat_tlk|fsit_talk_seq"
     r"|crouch_talk", "foster"),
    (r"joey.*|welder_.*", "joey"),
    (r"(sc\d\d_)?jobsworth|(sml|big)jobs_talk|jobs_\d|big_j_.*|sc\d\d_jobs_(talk\d?|point)", "jobsworth"),
    (r"lamb(_.*)?", "lamb"), (r"anita(_.*)?", "anita"), (r"foreman(_.*)?", "foreman"),
    (r"monitor(_.*)?", "monitor"), (r"shades\d?", "shades"), (r"dad(_.*)?", "dad"), (r"son(_.*)?", "son"),
    (r"skorl_.*", "skorl"), (r"radman\d?", "radman"), (r"walter_.*", "walter"), (r"burke_.*", "burke"),
    (r"anchor(_talk\d?_anim)?", "anchor"), (r"trevor_talk_anim", "trevor"), (r"helga\d", "helga"),
    (r"medi(_talk_.*)?", "medi"), (r"ken(_talk_.*)?|sc8\d_ken_.*", "ken"), (r"sc30_henri(_talk)?", "henri"),
    (r"sc31_guard(_talk\d?)?|sc42_blunt_talk", "blunt"), (r"sc32_vinc(ent|_talk)", "vincent"),
    (r"sc32_garden(er|_talk)", "gardener"), (r"danielle|dani_conv|sc38_dani_sattlk|sc42_dani_talk", "danielle"),
    (r"sc38_phone_talk", "piermont"), (r"sc36_barman|barman_talk", "barman"),
    (r"sc36_col(ston|_talk\d)", "colston"), (r"sc36_gal(lagher|_talk)", "sc36_gallagher"),
    (r"gallagher|gall_talk_.*", "gallagher"), (r"sc36_juke(box|_talk)", "jukebox"),
    (r"sc36_babs(_talk)?", "babs"), (r"sc42_(judge(_talk|_point)?|jdg_to_jobs)", "judge"),
    (r"sc42_pros(ecution|_talk)", "prosecutor"), (r"sc42_clerk(_talk)?", "clerk"),
    (r"sc81_(father|dad_tlk\d?)", "father"), (r"holo", "holo"), (r"hologram_b", "hologram_b"),
    (r"witness", "witness"),
]
_CHARACTER_RES = [(re.compile(pattern + "$"), who) for pattern, who in _CHARACTERS]


def resolve_source(source: str | None) -> str:
    """The folder holding ``sky.dsk``, ``sky.dnr`` and ``sky.cpt``: ``source`` or the package's folder."""
    root = source or DEFAULT_ROOT
    for name in ("sky.dnr", "sky.dsk", "sky.cpt"):
        if not os.path.isfile(os.path.join(root, name)):
            raise ConfigError(
                f"{os.path.join(root, name)}: not found; install the Debian package {PACKAGE} "
                f"(apt-get install {PACKAGE}) or pass --source with the folder of sky.dsk, sky.dnr and sky.cpt"
            )
    return root


def read_index(data: bytes, path: str) -> dict[int, tuple[int, int, int]]:
    """file number -> (offset in sky.dsk, stored size, flags) from ``sky.dnr``."""
    if len(data) < 4:
        raise ConfigError(f"{path}: too short for a sky.dnr index")
    (count,) = struct.unpack_from("<I", data)
    if 4 + 8 * count > len(data):
        raise ConfigError(f"{path}: its index promises {count} entries, the file ends first")
    index = {}
    for i in range(count):
        e = data[4 + 8 * i : 12 + 8 * i]
        offset, flags = int.from_bytes(e[2:5], "little"), int.from_bytes(e[5:8], "little")
        start = (offset & 0x7FFFFF) << (4 if offset >> 23 else 0)
        index[int.from_bytes(e[:2], "little")] = (start, flags & 0x3FFFFF, flags)
    return index


def load(stored: bytes, flags: int) -> bytes:
    """A stored file as the engine loads it (``Disk::loadFile``): unpacked when its header marks an RNC
    stream, keeping the 22-byte header unless flag bit 22 drops it; uncompressed files as stored."""
    packed = not flags >> 23 & 1 and len(stored) > HEADER and stored[0] & 0x80
    if not packed or stored[HEADER : HEADER + 4] != b"RNC\x01":
        return stored
    unpacked = rnc_unpack(stored[HEADER:])
    return unpacked if flags >> 22 & 1 else stored[:HEADER] + unpacked


def read_compacts(data: bytes, path: str) -> tuple[dict[int, str], dict[int, tuple[int, ...]]]:
    """Names and words of the compacts in ``sky.cpt`` (``compact.cpp``), including the link entries."""
    try:
        _version, lists = struct.unpack_from("<HH", data)
        lengths = struct.unpack_from(f"<{lists}H", data, 4)
        p = 4 + 2 * lists + 4  # skip the raw-buffer size
        (src_words,) = struct.unpack_from("<I", data, p)
        src = struct.unpack_from(f"<{src_words}H", data, p + 4)
        p += 4 + 2 * src_words
        (ascii_size,) = struct.unpack_from("<I", data, p)
        labels = data[p + 4 : p + 4 + ascii_size].decode("latin-1").split("\0")
        p += 4 + ascii_size
        names, words, s, k = {}, {}, 0, 0
        for lst, count in enumerate(lengths):
            for e in range(count):
                size, s = src[s], s + 1
                if size:
                    names[lst << 12 | e], words[lst << 12 | e] = labels[k], src[s + 1 : s + 1 + size]
                    s, k = s + 1 + size, k + 1
        (links,) = struct.unpack_from("<H", data, p)
        for i in range(links):
            link, target = struct.unpack_from("<HH", data, p + 2 + 4 * i)
            names[link], words[link], k = labels[k], words.get(target, ()), k + 1
    except (struct.error, IndexError) as e:
        raise ConfigError(f"{path}: not a sky.cpt compact file ({e})") from e
    return names, words


def character(name: str | None) -> str | None:
    """The character a compact or talk-animation name identifies, or None."""
    for pattern, who in _CHARACTER_RES:
        if name and pattern.match(name):
            return who
    return None


def disassemble(words: tuple[int, ...]) -> Iterator[tuple[int, int, tuple[int, ...]]]:
    """(word position, opcode, arguments) of a script module's bytecode, after its script table."""
    i = words[0] + 1
    while i < len(words):
        op = words[i]
        n = 2 + 2 * words[i + 1] if op == 14 and i + 1 < len(words) else _ARGS.get(op, 0)
        yield i, op, tuple(words[i + 1 : i + 1 + n])
        i += 1 + n


def speech_calls(words: tuple[int, ...], module: int) -> tuple[list, dict[int, set]]:
    """(script, mcode, args) of every speech call whose arguments are plain pushes, args as ("n", number)
    or ("v", variable); and every variable -> the constants stored in it."""
    starts = sorted((words[i], i) for i in range(1, words[0]) if words[i])
    ops, calls, stores = list(disassemble(words)), [], defaultdict(set)
    for j, (pos, op, args) in enumerate(ops):
        if op == 6 and j and ops[j - 1][1] == 2:
            stores[args[0] // 4].add(ops[j - 1][2][0])
        elif op == 6:
            stores[args[0] // 4].add(None)
        if op != 11 or len(args) < 2 or args[1] // 4 not in (SPEAK, SPEAK_DIR, WAIT, WAIT_DIR, ASK):
            continue
        pushed = ops[j - args[0] : j]
        if len(pushed) != args[0] or any(p[1] not in (0, 2) for p in pushed):
            continue
        k = bisect.bisect_right(starts, (pos, 1 << 16)) - 1
        script = module << 12 | (starts[k][1] if k >= 0 else 0)
        calls.append((script, args[1] // 4, tuple(("n", a[0]) if o == 2 else ("v", a[0] // 4) for _, o, a in pushed)))
    return calls, stores


def _by_animation(fn: int, anim: tuple[str, int], talk: tuple[int, ...], names: dict[int, str]) -> str | None:
    """The character a talk animation names: its talk-table entry or, when that is empty, the entry of the
    next mega set (the next direction for the directional calls, which add 2 per direction)."""
    if anim[0] != "n" or anim[1] == 0:  # animation 0: no animation, nobody named
        return None
    a = anim[1]
    for i in (a, a + 2, a + 4, a + 6) if fn in (SPEAK_DIR, WAIT_DIR) else (a, a + 1):
        if i < len(talk) and talk[i]:
            return character(names.get(talk[i]))
    return None


def label_texts(calls: list, stores: dict[int, set], names: dict[int, str], talk: tuple[int, ...]) -> dict:
    """Speech file number -> the set of characters the scripts name for it (see the module doc)."""
    scripts_asking = {script for script, fn, _ in calls if fn == ASK}
    constant = {var: next(iter(v)) for var, v in stores.items() if len(v) == 1 and None not in v}
    partner = defaultdict(set)  # script -> what the animations of its partner's lines name (None: nobody)
    for script, fn, args in calls:
        if fn != ASK and args[0] == ("v", PARTNER) and args[2] != ("n", 0):
            partner[script].add(_by_animation(fn, args[2], talk, names))
    found = defaultdict(set)
    for script, fn, args in calls:
        text = args[0] if fn == ASK else args[1]
        if text[0] != "n" or text[1] >> 12 >= len(SECTION_START):
            continue
        number = SPEECH_BASE + SECTION_START[text[1] >> 12] + (text[1] & 0xFFF)
        kind, value = args[0] if fn != ASK else ("ask", 0)
        if kind == "ask":
            who = "foster"
        elif kind == "n":
            who = character(names.get(value))
        elif value in constant:
            who = character(names.get(constant[value]))
        elif value == CUR_ID and script in scripts_asking:
            who = "foster"
        elif value == PARTNER and args[2] == ("n", 0):  # no animation: the one partner the script names
            one = partner[script]
            who = next(iter(one)) if len(one) == 1 and not one & {None, "foster"} else None
        elif value == PARTNER:  # the player's partner is never Foster himself
            who = _by_animation(fn, args[2], talk, names)
            who = None if who == "foster" else who
        else:
            who = _by_animation(fn, args[2], talk, names)
        found[number].add(who)
    return found


def speakers(root: str, index: dict, names: dict[int, str], words: dict) -> dict[int, set]:
    """Speech file number -> the characters its game scripts (and the intro) name; None: nobody."""
    calls, stores = [], defaultdict(set)
    with open(os.path.join(root, "sky.dsk"), "rb") as dsk:
        for number in MODULES:
            if number not in index:
                continue
            try:
                data = _stored(dsk, index[number], number)
            except OSError as e:
                raise ConfigError(f"{os.path.join(root, 'sky.dsk')}: script module {number}: {e}") from e
            module = np.frombuffer(data[: len(data) // 2 * 2], dtype="<u2")
            if not len(module) or module[0] >= len(module):
                raise ConfigError(f"{os.path.join(root, 'sky.dsk')}: script module {number} has no script table")
            module_calls, module_stores = speech_calls(tuple(int(w) for w in module), number - MODULES[0])
            calls += module_calls
            for var, values in module_stores.items():
                stores[var] |= values
    found = label_texts(calls, stores, names, words.get(TALK_TABLE, ()))
    for number, who in INTRO.items():
        found[number] = {who or None}
    return found


def _stored(dsk, entry: tuple[int, int, int], number: int) -> bytes:
    """File ``number`` of the open ``sky.dsk``, loaded (OSError when it lies outside or does not unpack)."""
    offset, size, flags = entry
    dsk.seek(offset)
    stored = dsk.read(size)
    if len(stored) != size:
        raise OSError(f"file {number}: bytes {offset}..{offset + size} lie outside sky.dsk")
    return load(stored, flags)


def speech_to_flac(root: str, entry: tuple[int, int, int], number: int) -> bytes:
    """A speech file -> 16-bit FLAC at 11,025 Hz (OSError when it cannot be read or unpacked)."""
    with open(os.path.join(root, "sky.dsk"), "rb") as dsk:
        body = _stored(dsk, entry, number)
    body = body[HEADER:]  # the header is not audio (Sound::startSpeech)
    if not body:
        raise OSError(f"file {number}: no samples after the {HEADER}-byte header")
    samples = (np.frombuffer(body, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    return encode(samples, RATE, fmt="FLAC", subtype="PCM_16")


def is_speech(number: int) -> bool:
    """A game line (the highest text number of the last section maps below 59326) or an intro voice."""
    return SPEECH_BASE <= number < SPEECH_BASE + SECTION_START[-1] + 0x1000 or number in INTRO


def clips(root: str | None = None) -> Iterator[SourceClip | SourceFailure]:
    """Every speech file of ``sky.dnr`` as a labelled clip or a failure with its reason."""
    root = resolve_source(root)
    with open(os.path.join(root, "sky.dnr"), "rb") as f:
        index = read_index(f.read(), os.path.join(root, "sky.dnr"))
    with open(os.path.join(root, "sky.cpt"), "rb") as f:
        names, words = read_compacts(f.read(), os.path.join(root, "sky.cpt"))
    found = speakers(root, index, names, words)
    dsk_size = os.path.getsize(os.path.join(root, "sky.dsk"))
    for number in sorted(n for n in index if is_speech(n)):
        origin, (offset, size, _flags) = f"sky.dsk:{number}", index[number]
        who = found.get(number, set()) - {None}  # a call naming nobody contradicts no other
        if offset + size > dsk_size or size < HEADER:
            detail = f"bytes {offset}..{offset + size} of a {dsk_size}-byte file, header {HEADER} bytes"
            yield SourceFailure(origin, "unreadable", detail)
        elif len(who) != 1:
            detail = f"scripts name {', '.join(sorted(who))}" if who else "no script names its speaker"
            yield SourceFailure(origin, "unlabelled", detail)
        else:
            yield SourceClip(
                speaker=f"{RELEASE}/{who.pop()}",
                name=f"{RELEASE}_{number}.flac",
                origin=origin,
                locale=LOCALE,
                read=lambda entry=index[number], number=number: speech_to_flac(root, entry, number),
                source=root,
            )
