#!/usr/bin/env python3
"""Build a real-text retrieval quality set from the installed man pages.

Usage: build_set.py OUT_DIR

Writes OUT_DIR/corpus.jsonl and OUT_DIR/queries.jsonl, used by the RAG
quality test and bench to compare our BM25 (tantivy), the dense encoder and
the reference Python library bm25s on the same real English text.

Why man pages: they are real, varied technical prose that every Debian
machine of the project's image already has on disk, so the set is built
offline, needs no download and no data file in the repository, and is the
same on every fresh machine of the same image (CI included).

Documents
    The English man pages (/usr/share/man/man[1-8]/ only, no locale
    directories) of the FIXED package list PACKAGES below, listed with
    `dpkg -L`. Packages that are not installed are skipped and named on
    stderr. Symlinks and `.so` redirect stubs (pages that only point to
    another page) are skipped; pages are deduplicated by id (first package
    in PACKAGES wins) and by identical source. Each page's groff source
    (usually .gz) is turned into plain text by the small stripper below
    (`man` is not run: one process per page is far too slow). It handles
    the man(7) macros (alternating-font macros join their arguments without
    a space, as groff prints them: `.BR ls (1)` -> "ls(1)"), `.ds` strings,
    tbl tables, the mdoc(7) macros roughly, and the common escapes; it is
    not a full groff, just readable text.

    {"id": "<name>.<section>", "title": "<name>(<section>)",
     "contents": <page text WITHOUT its NAME section, first 8,000 chars>}

Queries (known-item search)
    The page's own one-line summary from its NAME section: the text after
    `\\-` in `name \\- summary` (man) or the `.Nd` line (mdoc).

    {"query": "<summary>", "answer": "<doc id>"}

    To keep the task honest, the summary is not in the document: the NAME
    section is left out of `contents`, and every other occurrence of the
    full summary string in the contents (matched case-insensitively,
    across line breaks) is removed too, so the page cannot be found by an
    exact copy of the query. Pages whose summary has fewer than 3 words, or
    whose summary (case-insensitively) is shared with another page, are not
    used as queries (ambiguous); they stay in the corpus as distractors.

Determinism
    Pages are sorted by id. When more than MAX_QUERIES pages qualify,
    MAX_QUERIES of them are taken evenly spread over the sorted list
    (every k-th, k = eligible / MAX_QUERIES, fractional), so the queries
    spread over the packages and sections in proportion to their pages
    (about half of each package's pages on this image). Output is byte-identical between runs on
    the same image.

On the project's machine image this gives 2,173 documents (8.5 MB) and
1,000 queries (out of 1,955 eligible pages). Standard library only; runs in
about 6 seconds.
"""

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time

# The fixed package list. Order matters only for dedup (first one wins).
# Most are what the project's CI installs or what every Debian machine has;
# the last group is in the machine image (needed to reach >= 1,500 docs).
PACKAGES = [
    # every Debian system / the CI's own installs
    "coreutils", "util-linux", "bash", "procps", "findutils", "grep", "sed",
    "tar", "gzip", "diffutils", "man-db", "less", "apt", "dpkg", "passwd",
    "login", "mount",
    "git-man",  # git's man pages (the `git` package itself ships none)
    "curl", "bubblewrap", "openssh-client",
    # X / desktop test stack installed by CI
    "xterm", "x11-utils", "x11-xserver-utils", "xdotool", "xvfb", "openbox",
    "dbus-daemon", "dbus-bin",
    # toolchain
    "gcc", "gcc-12", "binutils-common", "make",
    "python3.11",  # python3 itself ships only symlinks
    "nodejs",
    "systemd",
    # in the machine image: the Linux man-pages project and a few more
    "manpages", "manpages-dev", "openssl", "iproute2",
]

MAX_QUERIES = 1000
MAX_CHARS = 8000
MIN_SUMMARY_WORDS = 3

MAN_DIR_RE = re.compile(r"^/usr/share/man/man[1-8]/([^/]+)$")
# name.section[.gz]; the section is a digit plus an optional suffix (3ssl, 1p, 3pm)
PAGE_RE = re.compile(r"^(?P<name>.+)\.(?P<sec>[1-8][A-Za-z0-9]*)(?:\.gz)?$")


# --------------------------------------------------------------------------
# groff escapes
# --------------------------------------------------------------------------

# Special characters \(xx and \[xx] -> reasonable plain characters.
SPECIAL = {
    "em": "\u2014", "en": "\u2013", "hy": "-", "mi": "-", "pl": "+",
    "eq": "=", "bu": "\u2022", "aq": "'", "dq": '"', "lq": "\u201c",
    "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "ga": "`", "aa": "\u00b4",
    "ti": "~", "ha": "^", "rs": "\\", "sl": "/", "ba": "|", "bv": "|",
    "or": "|", "at": "@", "sh": "#", "Do": "$", "lB": "[", "rB": "]",
    "lC": "{", "rC": "}", "la": "\u27e8", "ra": "\u27e9", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "mu": "\u00d7", "di": "\u00f7",
    "+-": "\u00b1", "<=": "\u2264", ">=": "\u2265", "!=": "\u2260",
    "->": "\u2192", "<-": "\u2190", "ua": "\u2191", "da": "\u2193",
    "dg": "\u2020", "de": "\u00b0", "fm": "\u2032", "sc": "\u00a7",
    "ps": "\u00b6", "Eu": "\u20ac", "eu": "\u20ac", "ct": "\u00a2",
    "ss": "\u00df", "lh": "\u261c", "rh": "\u261e", "ul": "_", "ru": "_",
    "sq": "\u25a1", "OK": "\u2713", "tf": "\u2234", "pc": "\u00b7",
    "Fo": "\u00ab", "Fc": "\u00bb", "fo": "\u2039", "fc": "\u203a",
    "oe": "\u0153", "ae": "\u00e6", "AE": "\u00c6", "'e": "\u00e9",
    "'a": "\u00e1", "`e": "\u00e8", "`a": "\u00e0", ":a": "\u00e4",
    ":o": "\u00f6", ":u": "\u00fc", ":A": "\u00c4", ":O": "\u00d6",
    ":U": "\u00dc", "~n": "\u00f1", ",c": "\u00e7", "'E": "\u00c9",
    "'o": "\u00f3", "'i": "\u00ed", "'u": "\u00fa", "/o": "\u00f8",
    "oa": "\u00e5", "12": "\u00bd", "14": "\u00bc", "34": "\u00be",
    "if": "\u221e", "*a": "\u03b1", "*b": "\u03b2", "*m": "\u03bc",
    "*p": "\u03c0", "ap": "~", "~~": "\u2248", "no": "\u00ac", "Im": "",
    "rn": "\u203e", "br": "|", "ci": "\u25cb",
}

# Predefined/common strings \*x, \*(xx, \*[name]: man, docbook and pod2man.
STRINGS = {
    "Aq": "'", "lq": "\u201c", "rq": "\u201d", 'L"': '"', 'R"': '"',
    "C`": "", "C'": "", "R": "\u00ae", "Tm": "\u2122", "PI": "\u03c0",
    "-": "-", "`": "`", "'": "'",
}

ESCAPE_RE = re.compile(
    r"""\\(?:
      (?P<comment>").*
    | (?P<font>f(?:\[[^\]]*\]|\(..|.))
    | (?P<size>s(?:[-+]?\(\d\d|\([-+]?\d\d|[-+]?\[[^\]]*\]|'[^']*'|[-+]?\d))
    | \((?P<spec>..)
    | \[(?P<brk>[^\]]*)\]
    | \*(?:\[(?P<str1>[^\]]*)\]|\((?P<str2>..)|(?P<str3>.))
    | (?P<num>n[-+]?(?:\[[^\]]*\]|\(..|.))
    | N'(?P<charnum>\d+)'
    | C'(?P<charname>[^']*)'
    | (?P<quoted>[hvwlLoDXZbxSRAB]'[^']*')
    | (?P<arg1>[mMFgkYVz$](?:\[[^\]]*\]|\(..|.))
    | (?P<single>.)
    )""",
    re.VERBOSE,
)

# Strings defined by the page being converted (`.ds name value`).
_page_strings = {}

SINGLE = {
    "-": "-", "e": "\\", "\\": "\\", "&": "", ")": "", "|": "", "^": "",
    "0": " ", " ": " ", "~": " ", ":": "", "%": "", "c": "", ",": "",
    "/": "", "'": "\u00b4", "`": "`", ".": ".", "t": " ", "a": "",
    "d": "", "u": "", "p": "", "r": "", "{": "", "}": "", "!": "",
    "?": "", "E": "\\", "_": "_",
}


def _special(name):
    if name in SPECIAL:
        return SPECIAL[name]
    m = re.fullmatch(r"u([0-9A-Fa-f]{4,6})(?:_.*)?", name)
    if m:  # \[u00E9]
        try:
            return chr(int(m.group(1), 16))
        except ValueError:
            return ""
    if name.startswith("char") and name[4:].isdigit():
        return chr(int(name[4:]))
    return ""


def _escape(m):
    g = m.groupdict()
    if g["spec"] is not None:
        return _special(g["spec"])
    if g["brk"] is not None:
        return _special(g["brk"])
    if g["charname"] is not None:
        return _special(g["charname"])
    for k in ("str1", "str2", "str3"):
        if g[k] is not None:
            return _page_strings.get(g[k], STRINGS.get(g[k], ""))
    if g["charnum"] is not None:
        n = int(g["charnum"])
        return chr(n) if 32 <= n < 0x110000 else ""
    if g["single"] is not None:
        return SINGLE.get(g["single"], g["single"])
    # comment, font, size, number register, quoted-argument and colour
    # escapes carry no text
    return ""


def unescape(s):
    """Replace groff escapes in one line of text by plain characters."""
    if "\\" not in s:
        return s
    return ESCAPE_RE.sub(_escape, s)


# --------------------------------------------------------------------------
# macros
# --------------------------------------------------------------------------

def split_args(s):
    """Split a request's argument string the way groff does (quotes group,
    "" inside quotes is a literal quote)."""
    args, i, n = [], 0, len(s)
    while i < n:
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            break
        if s[i] == '"':
            i += 1
            buf = []
            while i < n:
                if s[i] == '"':
                    if i + 1 < n and s[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(s[i])
                i += 1
            args.append("".join(buf))
        else:
            j = i
            while j < n and s[j] not in " \t":
                # keep escapes such as "\ " inside one argument
                j += 2 if s[j] == "\\" else 1
            args.append(s[i:j])
            i = j
    return args


# man(7) macros whose arguments are text, joined with spaces.
MAN_TEXT_SPACE = {"B", "I", "SM", "SB", "SY", "UR", "MT", "UE", "ME"}
# man(7) alternating-font macros: arguments are joined WITHOUT spaces, as
# groff prints them (`.BR ls (1)` -> "ls(1)").
MAN_TEXT_ALT = {"BR", "RB", "BI", "IB", "IR", "RI"}

# mdoc(7) callable macro names, dropped from argument lists.
MDOC_CALLABLE = {
    "Ac", "Ad", "An", "Ao", "Ap", "Aq", "Ar", "At", "Bc", "Bo", "Bq", "Brc",
    "Bro", "Brq", "Bsx", "Bx", "Cd", "Cm", "Dc", "Do", "Dq", "Dv", "Ec",
    "Em", "Eo", "Er", "Es", "Ev", "Fa", "Fc", "Fl", "Fn", "Fo", "Fr", "Ft",
    "Fx", "Ic", "In", "Li", "Lk", "Ms", "Mt", "Nm", "No", "Ns", "Nx", "Oc",
    "Oo", "Op", "Ot", "Ox", "Pa", "Pc", "Pf", "Po", "Pq", "Qc", "Ql", "Qo",
    "Qq", "Sc", "So", "Sq", "Sx", "Sy", "Tn", "Ux", "Va", "Vt", "Xc", "Xo",
    "Xr", "Dl", "D1", "It", "St", "Lb", "Bf", "Ef", "Ta",
}
# mdoc macros that print a fixed name.
MDOC_NAMES = {"Ux": "UNIX", "Bx": "BSD", "Bsx": "BSD/OS", "Fx": "FreeBSD",
              "Nx": "NetBSD", "Ox": "OpenBSD", "At": "AT&T UNIX"}
# mdoc macros whose whole line carries no text.
MDOC_DROP = {"Dd", "Dt", "Os", "Bl", "El", "Bd", "Ed", "Pp", "Lp", "Bk",
             "Ek", "Rs", "Re", "Sm", "Bf", "Ef", "Ud", "Ex", "Rv", "Db"}


# mdoc enclosure macros: opening text and the text that closes them at the
# end of the line (the ...o forms are closed by a later ...c macro).
MDOC_ENCLOSE = {"Op": ("[", "]"), "Pq": ("(", ")"), "Dq": ('"', '"'),
                "Qq": ('"', '"'), "Sq": ("'", "'"), "Ql": ("'", "'"),
                "Aq": ("<", ">"), "Bq": ("[", "]"), "Brq": ("{", "}"),
                "Oo": ("[", ""), "Po": ("(", ""), "Do": ('"', ""),
                "Qo": ('"', ""), "So": ("'", ""), "Ao": ("<", ""),
                "Bo": ("[", ""), "Bro": ("{", "")}
MDOC_CLOSE = {"Oc": "]", "Pc": ")", "Dc": '"', "Qc": '"', "Sc": "'",
              "Ac": ">", "Bc": "]", "Brc": "}"}


def mdoc_line(macro, rest, page_name):
    """Render one mdoc macro line roughly as text."""
    toks = [macro] + split_args(rest)
    out = []
    closers = []   # closing brackets/quotes still owed at the end of line
    glue = False   # no space before the next token (after Ns or an opener)
    i = 0
    while i < len(toks):
        t = toks[i]
        i += 1
        nxt = toks[i] if i < len(toks) else None
        word = None
        if t == "Ns":
            glue = True
        elif t in MDOC_ENCLOSE:
            opener, closer = MDOC_ENCLOSE[t]
            out.append(("" if glue or not out else " ") + opener)
            closers.append(closer)
            glue = True
        elif t in MDOC_CLOSE:
            out.append(MDOC_CLOSE[t])
        elif t == "Fl":
            # the flag's name, when it is not another macro, follows glued
            if nxt is not None and nxt not in MDOC_CALLABLE:
                word = "-" + nxt
                i += 1
            else:
                word = "-"
        elif t == "Xr" and nxt is not None and i + 1 < len(toks):
            word = f"{nxt}({toks[i + 1]})"
            i += 2
        elif t == "Nm":
            if nxt is None or nxt in MDOC_CALLABLE:
                word = page_name  # bare .Nm repeats the page's name
        elif t == "Fn" and nxt is not None:
            word = f"{nxt}({', '.join(toks[i + 1:])})"
            i = len(toks)
        elif t == "Nd":
            word = "\u2014"  # rendered as "name \u2014 description"
        elif t in MDOC_NAMES:
            word = MDOC_NAMES[t]
        elif t in MDOC_CALLABLE or t in MDOC_DROP:
            pass  # other macro names only change the font
        else:
            word = t
        if word is None:
            continue
        # closing punctuation attaches to the previous word
        if out and (glue or word in (",", ".", ";", ":", ")", "]", "?", "!")):
            out.append(word)
        else:
            out.append((" " if out else "") + word)
        glue = False
    return "".join(out) + "".join(reversed(closers))


# Requests/macros whose line is dropped without a trace (man, tbl, pod2man,
# docbook). Anything lowercase is a groff request and dropped too.
MAN_DROP = {"TH", "PP", "LP", "P", "HP", "RS", "RE", "PD", "TQ", "EX", "EE",
            "YS", "IX", "Vb", "Ve", "Sp", "DT", "UC", "AT", "TS", "TE", "T&",
            "Id", "SO", "SE", "FE", "FS", "EQ", "EN", "PS", "PE"}


def groff_to_sections(src):
    """Turn a man page source into [(heading, [lines])] of plain text.

    The text before the first heading goes under heading ''. Returns also
    whether the page is mdoc.
    """
    raw_lines = src.split("\n")
    # join continuation lines ending in a single backslash
    lines = []
    buf = ""
    for ln in raw_lines:
        if ln.endswith("\\") and not ln.endswith("\\\\"):
            buf += ln[:-1]
            continue
        lines.append(buf + ln)
        buf = ""
    if buf:
        lines.append(buf)

    _page_strings.clear()
    is_mdoc = any(ln.startswith((".Dd", ".Sh ", ".Nd ")) for ln in lines[:400])
    page_name = ""
    sections = [("", [])]
    out = sections[0][1]
    skip_until = None   # end marker of a .de/.ig block
    in_tbl_fmt = False  # inside the format part of a tbl table
    in_tbl = False

    for ln in lines:
        if skip_until is not None:
            # the end marker may have blanks after the control character
            if re.sub(r"\s+", "", ln).startswith(skip_until):
                skip_until = None
            continue
        if in_tbl_fmt:
            # tbl: options line(s) end with ';', the format ends with '.'
            if ln.rstrip().endswith("."):
                in_tbl_fmt = False
            continue
        if ln.startswith((".\\\"", "'\\\"", ".\\#", "\\#")) or ln.strip() in (".", "'"):
            continue

        if ln[:1] in (".", "'"):
            body = ln[1:].lstrip()
            m = re.match(r"(\S+)\s*(.*)$", body)
            if not m:
                continue
            macro, rest = m.group(1), m.group(2)
            rest = re.sub(r'\\".*', "", rest)  # trailing comment
            if macro in ("de", "de1", "am", "am1", "ig"):  # skip definitions
                if macro == "ig":
                    skip_until = ".." if not rest.strip() else "." + rest.split()[0]
                elif macro in ("de", "de1", "am", "am1"):
                    skip_until = ".."
                continue
            if macro == "ds":  # string definition, used as \*(xx in text
                parts = rest.split(None, 1)
                if parts:
                    val = parts[1] if len(parts) > 1 else ""
                    _page_strings[parts[0]] = unescape(val[1:] if val.startswith('"') else val)
                continue
            if macro == "TS":
                in_tbl_fmt = True
                in_tbl = True
                continue
            if macro == "TE":
                in_tbl = False
                continue
            if macro in ("SH", "Sh", "SS", "Ss"):
                heading = unescape(" ".join(split_args(rest))).strip()
                if macro in ("SH", "Sh"):
                    sections.append((heading, []))
                    out = sections[-1][1]
                else:
                    out.append(heading)
                continue
            if is_mdoc and macro in MDOC_DROP:
                continue
            if is_mdoc and macro == "Nm" and not page_name and rest.strip():
                page_name = unescape(split_args(rest)[0])
            if is_mdoc and (macro in MDOC_CALLABLE or macro in ("Nd", "Fn")
                            or macro in MDOC_NAMES or macro in MDOC_ENCLOSE):
                text = mdoc_line(macro, rest, page_name)
            elif macro in MAN_TEXT_ALT:
                text = "".join(split_args(rest))
            elif macro in MAN_TEXT_SPACE:
                text = " ".join(split_args(rest))
            elif macro in ("IP", "TP"):
                args = split_args(rest)
                text = args[0] if args and macro == "IP" else ""
            elif macro == "OP":
                text = "[" + " ".join(split_args(rest)) + "]"
            elif macro in MAN_DROP or macro[:1].islower() or macro[:1] == "\\":
                continue
            elif macro[:1].isupper():
                # unknown user macro: keep its arguments, they are usually text
                text = " ".join(split_args(rest))
            else:
                continue
            text = unescape(text).strip()
            if text:
                out.append(text)
            continue

        # text line
        if in_tbl:
            ln = ln.replace("T{", "").replace("T}", "").replace("\t", "  ")
            if ln.strip() in ("_", "=", "-"):
                continue
        text = unescape(ln).rstrip()
        out.append(text)
    return sections, is_mdoc


def clean_text(lines):
    """Join lines, collapse runs of blank lines and trailing spaces."""
    text = "\n".join(ln.rstrip() for ln in lines)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def split_name_summary(name_text):
    """'ls, dir \u2014 list directory contents' -> 'list directory contents'."""
    flat = " ".join(name_text.split())
    m = re.search(r"\s[-\u2013\u2014]+\s", flat) or re.search(r"[-\u2013\u2014]{1,2}\s", flat)
    if not m:
        return ""
    return flat[m.end():].strip()


def read_source(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def is_redirect(src):
    """True for a stub page that only sources another page (.so)."""
    real = [ln for ln in src.split("\n")
            if ln.strip() and not ln.startswith((".\\\"", "'\\\""))]
    return len(real) <= 2 and any(ln.startswith(".so ") for ln in real)


def package_pages(pkg):
    """Paths of the English man pages of an installed package, or None."""
    st = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg],
                        capture_output=True, text=True)
    if st.returncode != 0 or st.stdout.strip() != "installed":
        return None
    res = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
    return sorted(p for p in res.stdout.splitlines() if MAN_DIR_RE.match(p))


def main():
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        print("usage: build_set.py OUT_DIR", file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    t0 = time.monotonic()

    pages = {}          # id -> dict
    seen_src = set()    # hashes of page sources, to drop identical copies
    used, skipped = [], []
    n_links = n_redirects = n_dups = 0
    for pkg in PACKAGES:
        paths = package_pages(pkg)
        if paths is None:
            skipped.append(pkg)
            continue
        n_pkg = 0
        for path in paths:
            if os.path.islink(path) or not os.path.isfile(path):
                n_links += 1
                continue
            m = PAGE_RE.match(os.path.basename(path))
            if not m:
                continue
            name, sec = m.group("name"), m.group("sec")
            doc_id = f"{name}.{sec}"
            src = read_source(path)
            if is_redirect(src):
                n_redirects += 1
                continue
            h = hashlib.sha1(src.encode("utf-8", "replace")).digest()
            if doc_id in pages or h in seen_src:
                n_dups += 1
                continue
            seen_src.add(h)
            pages[doc_id] = {"id": doc_id, "name": name, "sec": sec,
                             "src": src, "pkg": pkg}
            n_pkg += 1
        used.append((pkg, n_pkg))
    if skipped:
        print("skipped (not installed): " + " ".join(skipped), file=sys.stderr)

    docs = []
    summaries = {}
    for doc_id in sorted(pages):
        p = pages[doc_id]
        sections, _ = groff_to_sections(p["src"])
        name_secs = [s for s in sections if s[0].upper() == "NAME"]
        summary = split_name_summary(" ".join(name_secs[0][1])) if name_secs else ""
        body = []
        for heading, lines in sections:
            if heading.upper() == "NAME":
                continue
            if heading:
                body.append("")
                body.append(heading)
            body.extend(lines)
        contents = clean_text(body)
        if summary:
            # remove copies of the summary, whatever the case and line breaks
            words = [re.escape(w) for w in summary.split()]
            contents = re.sub(r"\s+".join(words), "", contents, flags=re.IGNORECASE)
        contents = contents[:MAX_CHARS]
        if not contents.strip():
            continue
        docs.append({"id": doc_id, "title": f"{p['name']}({p['sec']})",
                     "contents": contents, "summary": summary})
        key = " ".join(summary.lower().split())
        summaries[key] = summaries.get(key, 0) + 1

    eligible = [d for d in docs
                if len(d["summary"].split()) >= MIN_SUMMARY_WORDS
                and summaries[" ".join(d["summary"].lower().split())] == 1]
    n_short = sum(1 for d in docs if len(d["summary"].split()) < MIN_SUMMARY_WORDS)
    if len(eligible) > MAX_QUERIES:
        step = len(eligible) / MAX_QUERIES
        chosen = [eligible[int(i * step)] for i in range(MAX_QUERIES)]
    else:
        chosen = eligible

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d["id"], "title": d["title"],
                                "contents": d["contents"]}, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "queries.jsonl"), "w", encoding="utf-8") as f:
        for d in chosen:
            f.write(json.dumps({"query": d["summary"], "answer": d["id"]},
                               ensure_ascii=False) + "\n")

    print("packages: " + " ".join(f"{p}={n}" for p, n in used))
    print(f"pages skipped: {n_links} symlinks, {n_redirects} .so redirects, "
          f"{n_dups} duplicates")
    print(f"docs: {len(docs)}")
    print(f"queries: {len(chosen)} (eligible {len(eligible)}; "
          f"{n_short} pages with a summary under {MIN_SUMMARY_WORDS} words or none, "
          f"{sum(1 for d in docs if d['summary'] and summaries[' '.join(d['summary'].lower().split())] > 1)}"
          f" pages with a shared summary)")
    print(f"written to {out_dir} in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
