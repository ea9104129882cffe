"""The pii stage: precision and recall on a hand-labelled set of real pages, adversarial cases, look-alikes
that must never be flagged, and the modes (redact, hashed placeholders, tag, remove_doc, off).

The labelled set (``data/pii_labels.jsonl``, how it was made in ``data/pii_labels.md``) holds labels only:
the texts are extracted here from ../shared/data with the whole page kept (footers and Impressum blocks
hold the contact data). A detection counts when it overlaps a gold span of its kind.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from curate.io.html import extract_text
from curate.schema import conform
from curate.stages.extract import ExtractParams
from curate.stages.language import Language, LanguageParams
from curate.stages.pii import KINDS, Pii, PiiParams, card_network, luhn_valid, masked

LABELS = Path(__file__).parent / "data" / "pii_labels.jsonl"
#: Measured on the labelled set (454 documents, 345 spans); the floors below sit a little under them. The
#: rules were tuned while reading this set's misses, so a fresh set would score lower.
MEASURED = {"precision": 1.000, "recall": 0.959, "email_recall": 0.993, "phone_recall": 0.933}


def batch_of(texts: list[str], **columns) -> pa.Table:
    return conform(pa.table({"id": pa.array([f"d{i}" for i in range(len(texts))], pa.string()),
                             "text": pa.array(texts, pa.string()), **columns}))


def spans_of(params: PiiParams, texts: list[str]) -> list[list[tuple[str, str]]]:
    """Per text, the (kind, value) of every span found (tag mode: the text stays as it was)."""
    tagged = params.model_copy(update={k: "tag" for k in params.modes()})
    out = Pii(tagged)(batch_of(texts))
    return [[(s["kind"], text[s["start"]:s["end"]]) for s in spans]
            for text, spans in zip(texts, out["pii_spans"].to_pylist(), strict=True)]


# ---- the labelled set --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def labelled(shared_data: Path) -> list[tuple[dict, str]]:
    records = [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines()]
    params = ExtractParams(engine="resiliparse", main_content=False)
    out = []
    for record in records:
        path, _, line = record["doc"].partition(":") if record["doc"].startswith("text/") else (record["doc"], "", "")
        raw = (shared_data / path).read_bytes()
        if line:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            text = text.split("\n")[int(line) - 1].rstrip("\r")
        else:
            text = extract_text(gzip.decompress(raw), None, params)[0]
        out.append((record, text))
    assert len(out) == 454
    return out


def _gold_spans(record: dict, text: str) -> list[list]:
    """Each label located in the text: its (k+1)-th listing takes the (k+1)-th occurrence not taken yet."""
    taken: set[tuple[int, int]] = set()
    spans = []
    for label in record["labels"]:
        start = text.find(label["value"])
        while (start, start + len(label["value"])) in taken:
            start = text.find(label["value"], start + 1)
        assert start >= 0, (record["doc"], label)
        taken.add((start, start + len(label["value"])))
        spans.append([label["kind"], start, start + len(label["value"]), False])
    return spans


def test_precision_and_recall_on_labelled_real_pages(labelled) -> None:
    texts = [text for _, text in labelled]
    batch = Language(LanguageParams(keep=[]))(batch_of(texts))  # phone regions follow the language, as in a run
    out = Pii(PiiParams(**dict.fromkeys(KINDS, "tag")))(batch)
    tp, fp, gold, missed = Counter(), Counter(), Counter(), Counter()
    for (record, text), spans in zip(labelled, out["pii_spans"].to_pylist(), strict=True):
        expected = _gold_spans(record, text)
        for span in spans:
            hits = [g for g in expected if g[0] == span["kind"] and span["start"] < g[2] and g[1] < span["end"]]
            (tp if hits else fp)[span["kind"]] += 1
            for g in hits:
                g[3] = True
        for kind, _, _, found in expected:
            gold[kind] += 1
            missed[kind] += not found
    precision = sum(tp.values()) / (sum(tp.values()) + sum(fp.values()))
    recall = 1 - sum(missed.values()) / sum(gold.values())
    per_kind = {k: (tp[k] / max(tp[k] + fp[k], 1), 1 - missed[k] / gold[k]) for k in gold}
    print(f"\npii on {len(labelled)} labelled documents: P {precision:.3f} R {recall:.3f}; per kind (P, R): "
          + ", ".join(f"{k} {p:.3f}/{r:.3f} of {gold[k]}" for k, (p, r) in sorted(per_kind.items())))
    assert sum(gold.values()) == 345 and gold["email"] == 136 and gold["phone"] == 195 and gold["iban"] == 11
    assert precision >= MEASURED["precision"] - 0.01
    assert recall >= MEASURED["recall"] - 0.02
    assert per_kind["email"][1] >= MEASURED["email_recall"] - 0.02
    assert per_kind["phone"][1] >= MEASURED["phone_recall"] - 0.03
    assert per_kind["iban"] == (1.0, 1.0) and per_kind["ip_address"] == (1.0, 1.0)
    # the look-alike pages (dates, prices, ISBNs, Instagram ids that pass Luhn, versions) give nothing
    negatives = [i for i, (record, _) in enumerate(labelled) if not record["labels"]]
    assert len(negatives) == 324
    flagged = [labelled[i][0]["doc"] for i in negatives if out["pii_spans"][i].as_py()]
    assert not flagged


# ---- adversarial cases and look-alikes ---------------------------------------------------------------

ADVERSARIAL = [
    ("Schreiben Sie an max.mustermann [at] firma [dot] de oder info(at)verein.org.",
     [("email", "max.mustermann [at] firma [dot] de"), ("email", "info(at)verein.org")]),
    ("Mail: presse [ät] x.de is not an address, kontakt (@) buero-meier.ch is",
     [("email", "kontakt (@) buero-meier.ch")]),
    ("unsubscribe at https://news.site.com/u?email=jane.roe@gmail.com&list=4",
     [("email", "jane.roe@gmail.com")]),
    ("mirror: ftp://anonymous:guest@ftp.kernel.org/pub and mailto:webmaster@kernel.org",
     [("email", "webmaster@kernel.org")]),
    ("Glued by extraction: kl.service@almamedia.fiAsiakastuki ja asiointi", [("email", "kl.service@almamedia.fi")]),
    ("a fediverse handle is an address too: @alice@mastodon.social", [("email", "alice@mastodon.social")]),
    ("Call +1 (212) 736-5000 or +44 20 7123 4567 today",
     [("phone", "+1 (212) 736-5000"), ("phone", "+44 20 7123 4567")]),
    ("Tel. 030 / 227 567 89, Fax (030) 227-565-52, Zentrale +49 221 / 50 80 00",
     [("phone", "030 / 227 567 89"), ("phone", "(030) 227-565-52"), ("phone", "+49 221 / 50 80 00")]),
    ("Telefon: 017656998944 (mobil)", [("phone", "017656998944")]),
    ("By Megan Rowe meganr@spokesman.com(509) 459-5382",
     [("email", "meganr@spokesman.com"), ("phone", "(509) 459-5382")]),
    ("Server at 8.8.4.4 answered; 10.0.0.1 and 192.168.1.1 are private, 203.0.113.9 documentation",
     [("ip_address", "8.8.4.4")]),
    ("reach it on 2606:4700:4700::1111 (not 2001:db8::1, fe80::1 or std::vector)",
     [("ip_address", "2606:4700:4700::1111")]),
    ("Firmware version 10.2.4.1 and v3.2.1.4 and Desktop 2.9.0.5, but the DNS is 9.9.9.9",
     [("ip_address", "9.9.9.9")]),
    ("Pay with 4539 1488 0343 6467 (test card 4111 1111 1111 1111 is public)",
     [("credit_card", "4539 1488 0343 6467")]),
    ("Spendenkonto IBAN: DE44 5001 0517 5407 3249 31 BIC INGDDEFFXXX", [("iban", "DE44 5001 0517 5407 3249 31")]),
    ("Key AKIA2E0A8F3B244C9986 (the docs' AKIAIOSFODNN7EXAMPLE is public)", [("aws_key", "AKIA2E0A8F3B244C9986")]),
    ("curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcDEF123' https://api",
     [("bearer_token", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcDEF123")]),
    ("token ghp_" + "A1b2C3d4E5" * 4 + " in a gist", [("api_token", "ghp_" + "A1b2C3d4E5" * 4)]),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nxyz+/=\n-----END RSA PRIVATE KEY-----\nafter",
     [("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nxyz+/=\n-----END RSA PRIVATE KEY-----")]),
]

LOOK_ALIKES = [
    "Posted 03/05/2022 20:36, updated 04-26-2011 10:11:33 and 2024-01-15T10:30",
    "Prices: $1,234,567.89, €0.99, 1.234.567,00 EUR, 12.500 Einwohner",
    "ISBN 978-3-16-148410-0, ISSN 0317-8471, DOI 10.1000/182, arXiv:2406.17557, PMID 12345678",
    "Lost advanced local folder view in 0.8-20031228; Phoenix 0.5 2003-03-08",
    "Python 3.11.4.1 release, build 10.0.19041.1 and version 1.2.3.4",
    "postcode 10119 Berlin, CEP 79020-250, ZIP 90210-1234, 〒094-0011",
    "retina assets logo@2x.png and icon@3x.jpg, npm i pkg@1.2.3, @scope/name, follow @nasa",
    "examples name@example.com, a@b.test, x@host.invalid, me@localhost",
    "order no. 4539148803436467 shipped; EAN 4006381333931",
    "Instagram post 2718281828459045235 and 3141592653589793238",
    "times 12:30:45, ratios 16:9, MAC 00:1A:2B:3C:4D:5E, C++ std::vector<int>",
    "Call 555-0123 or (212) 555-0123 in the film; Ofcom drama number 020 7946 0958",
    "Seasons 2019-2020 and 2020-21, pages 123-145, scores 3-1",
    "Steuernummer 123/456/78901, USt-IdNr. DE123456789, HRB 12345",
]


@pytest.mark.parametrize("text,expected", ADVERSARIAL, ids=[e[0][:30] for e in ADVERSARIAL])
def test_adversarial_cases(text: str, expected: list[tuple[str, str]]) -> None:
    assert spans_of(PiiParams(), [text])[0] == expected


def test_no_false_positive_on_look_alikes() -> None:
    found = spans_of(PiiParams(), LOOK_ALIKES)
    assert found == [[] for _ in LOOK_ALIKES], [(t, f) for t, f in zip(LOOK_ALIKES, found, strict=True) if f]


def test_validators() -> None:
    assert luhn_valid("4539148803436467") and not luhn_valid("4539148803436468")
    assert card_network("378282246310005") == "amex" and card_network("9999999999999995") is None
    assert masked("j.doe@firm.de") == "•.•••@••••.••"


# ---- modes ---------------------------------------------------------------------------------------------

TEXTS = ["Write to jane.roe@gmail.com or JANE.ROE@GMAIL.COM; call +49 30 901820.",
         "Nothing personal here, just 2024-01-15.",
         "Card 4539 1488 0343 6467 and jane.roe@gmail.com again."]


def test_redaction_replaces_each_span_and_locates_it() -> None:
    out = Pii()(batch_of(TEXTS))
    assert out["text"].to_pylist() == ["Write to <EMAIL> or <EMAIL>; call <PHONE>.", TEXTS[1],
                                       "Card <CREDIT_CARD> and <EMAIL> again."]
    assert out["pii_email_count"].to_pylist() == [2, 0, 1]
    assert out["pii_phone_count"].to_pylist() == [1, 0, 0]
    for text, spans in zip(out["text"].to_pylist(), out["pii_spans"].to_pylist(), strict=True):
        assert [text[s["start"]:s["end"]] for s in spans] == [f"<{s['kind'].upper()}>" for s in spans]
        assert all(s["original"] is None for s in spans)
    assert out["removed_by"].null_count == 3


def test_hashed_placeholders_are_stable_within_a_salt() -> None:
    params = PiiParams(placeholder="hash", salt="s3cret")
    first = Pii(params)(batch_of(TEXTS))["text"].to_pylist()
    again = Pii(params)(batch_of(TEXTS[::-1]))["text"].to_pylist()[::-1]  # other batch, other order
    assert first == again
    token = first[0].split()[2]
    assert token.startswith("<EMAIL_") and len(token) == len("<EMAIL_12345678>")
    assert first[0].count(token) == 2 and token in first[2]  # one address, any casing: one token
    other = Pii(PiiParams(placeholder="hash", salt="other"))(batch_of(TEXTS))["text"].to_pylist()
    assert token not in other[0]
    with pytest.raises(ValidationError, match="needs a salt"):
        PiiParams(placeholder="hash")


def test_tag_remove_doc_and_off() -> None:
    params = PiiParams(email="tag", credit_card="remove_doc", phone="off")
    out = Pii(params)(batch_of(TEXTS))
    assert out["text"][0].as_py() == TEXTS[0]  # tagged emails stay, the phone is not looked for
    assert "pii_phone_count" not in out.column_names
    assert out["removed_by"].to_pylist() == [None, None, "pii"]
    assert out["reason"][2].as_py() == "pii_credit_card" and out["score"][2].as_py() == 1.0
    # the removed document is written redacted too (the card; the tagged email stays)
    assert out["text"][2].as_py() == "Card <CREDIT_CARD> and jane.roe@gmail.com again."


def test_no_original_value_reaches_the_output_by_default() -> None:
    out = Pii()(batch_of(TEXTS))
    sink = io.BytesIO()
    pq.write_table(out, sink, compression="none")
    written = sink.getvalue()
    for value in (b"jane.roe", b"901820", b"4539 1488", b"JANE.ROE"):
        assert value not in written
    kept = Pii(PiiParams(keep_originals=True))(batch_of(TEXTS))
    assert [s["original"] for s in kept["pii_spans"][0].as_py()] == ["jane.roe@gmail.com", "JANE.ROE@GMAIL.COM",
                                                                     "+49 30 901820"]


def test_empty_batch_and_missing_text() -> None:
    out = Pii()(batch_of([]))
    assert out.num_rows == 0 and "pii_spans" in out.column_names and "pii_email_count" in out.column_names
    out = Pii()(conform(pa.table({"id": ["a"], "text": pa.array([None], pa.string())})))
    assert out["pii_email_count"].to_pylist() == [0]
