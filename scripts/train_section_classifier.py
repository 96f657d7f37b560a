#!/usr/bin/env python3
"""Fit the extractive writer's section classifier on the TRAIN splits only, deterministically.

    python scripts/train_section_classifier.py            # writes scribe/notes/data/section_classifier.json
    python scripts/train_section_classifier.py --eval     # also reports accuracy on the dev files

Data: ``$SCRIBE_EVAL_DIR`` or ``../shared/eval`` (relative to the repository root):
``train/aci_bench_train.jsonl`` (67 ACI-Bench encounters with their reference notes split into
subjective / objective_exam / objective_results / assessment_and_plan) and
``train/mts_dialog_train.jsonl`` (1,201 MTS-Dialog dialogue→section pairs). Both CC BY 4.0:
ACI-Bench (Yim et al., Sci Data 2023) and MTS-Dialog (Ben Abacha et al., EACL 2023).

* ``division`` model: each ACI-Bench train utterance is labelled with the division of the
  reference-note sentence it shares the most (idf-weighted) content words with, or ``none`` when
  it shares too little (greetings, small talk, back-channels). MTS-Dialog train dialogues add
  more examples under the division their section belongs to.
* ``topic`` model: MTS-Dialog section codes mapped to the kinds templates route on (GENHX → hpi,
  FAM/SOCHX → social_family, DISPOSITION → plan, …), plus ACI-Bench exam/results utterances.
* HMM transitions between divisions from the ACI-Bench train label sequences; the temperature
  that turns naive Bayes scores into likelihoods is chosen by 5-fold cross-validation over the
  ACI-Bench train encounters (folds by position, no randomness).

The dev files are read only with ``--eval``, to report accuracy; nothing is chosen on them.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scribe.notes.classifier import (  # noqa: E402
    DIVISIONS,
    NaiveBayes,
    SectionClassifier,
    features,
    from_json,
    softmax,
)
from scribe.notes.dialogue import segments_from_turns  # noqa: E402
from scribe.notes.text import content_stems, utterances  # noqa: E402

NOTE_DIVISIONS = ("subjective", "objective_exam", "objective_results", "assessment_and_plan")

MTS_TOPIC = {
    "CC": "chief_complaint",
    "GENHX": "hpi",
    "ROS": "ros",
    "PASTMEDICALHX": "pmh",
    "IMMUNIZATIONS": "pmh",
    "GYNHX": "pmh",
    "OTHER_HISTORY": "pmh",
    "PASTSURGICAL": "psh",
    "MEDICATIONS": "medications",
    "ALLERGY": "allergies",
    "FAM/SOCHX": "social_family",
    "EXAM": "exam",
    "LABS": "results",
    "IMAGING": "results",
    "ASSESSMENT": "assessment",
    "DIAGNOSIS": "assessment",
    "PLAN": "plan",
    "DISPOSITION": "plan",
    "EDCOURSE": "plan",
    "PROCEDURES": "plan",
}
TOPIC_DIVISION = {
    "chief_complaint": "subjective",
    "hpi": "subjective",
    "ros": "subjective",
    "pmh": "subjective",
    "psh": "subjective",
    "medications": "subjective",
    "allergies": "subjective",
    "social_family": "subjective",
    "exam": "objective_exam",
    "results": "objective_results",
    "assessment": "assessment_and_plan",
    "plan": "assessment_and_plan",
}
SOAP_LETTER = {
    "subjective": "S",
    "objective_exam": "O",
    "objective_results": "O",
    "assessment": "A",
    "plan": "P",
}

ALPHA = 0.5  # additive smoothing
MIN_COUNT = 3  # features seen fewer times in training are dropped (keeps the file small)
MIN_SPREAD = 0.3  # features whose log-likelihood differs by less across labels carry no signal
ALIGN_MIN_SCORE = 6.0  # idf-weighted shared content words needed to call an utterance note-worthy
ALIGN_MIN_RATIO = 0.25  # … and share of the utterance's own idf mass
TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
MTS_WEIGHT = 1  # copies of each MTS-Dialog example in the division model


def eval_dir() -> Path:
    return Path(os.environ.get("SCRIBE_EVAL_DIR", ROOT.parent / "shared" / "eval"))


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------ silver labels


def note_sentences(rec: dict) -> list[tuple[str, frozenset[str]]]:
    out = []
    for d in NOTE_DIVISIONS:
        txt = (rec.get("sections") or {}).get(d) or ""
        for line in txt.split("\n"):
            line = line.strip(" •-\t")
            if not line or line.isupper():
                continue
            for s in re.split(r"(?<=[.!?])\s+", line):
                cs = frozenset(content_stems(s))
                if cs:
                    out.append((d, cs))
    return out


def idf_table(records: list[dict]) -> dict[str, float]:
    df: collections.Counter[str] = collections.Counter()
    n = 0
    for r in records:
        for _d, cs in note_sentences(r):
            df.update(cs)
            n += 1
    return {w: math.log((n + 1) / (c + 1)) for w, c in df.items()} | {"<N>": math.log(n + 1)}


def aci_examples(records: list[dict], idf: dict[str, float]) -> list[list[tuple[str, str, str]]]:
    """Per encounter: [(utterance text, speaker, silver division)]."""
    default_idf = idf["<N>"]
    visits = []
    for r in records:
        sents = note_sentences(r)
        rows = []
        for seg in segments_from_turns(r["dialogue"]):
            for u in utterances(seg.text):
                cu = set(content_stems(u.text))
                tot = sum(idf.get(w, default_idf) for w in cu) or 1.0
                best, label = 0.0, "none"
                for d, cs in sents:
                    sc = sum(idf.get(w, default_idf) for w in cu & cs)
                    if sc > best:
                        best, label = sc, d
                if best < ALIGN_MIN_SCORE or best / tot < ALIGN_MIN_RATIO:
                    label = "none"
                rows.append((u.text, str(seg.speaker), label))
        visits.append(rows)
    return visits


def mts_examples(records: list[dict]) -> list[tuple[list[list[str]], str]]:
    """Per dialogue: (features of each turn, topic)."""
    out = []
    for r in records:
        topic = MTS_TOPIC.get(r["section_header"])
        if topic is None:
            continue
        segs = segments_from_turns(r["dialogue"])
        out.append(([features(s.text, str(s.speaker)) for s in segs], topic))
    return out


# ------------------------------------------------------------------ fitting


def fit_nb(examples: list[tuple[list[str], str]], labels: tuple[str, ...]) -> NaiveBayes:
    counts = {lab: collections.Counter() for lab in labels}
    docs = collections.Counter()
    total = collections.Counter()
    for feats, lab in examples:
        counts[lab].update(feats)
        docs[lab] += 1
        total.update(feats)
    vocab = sorted(f for f, c in total.items() if c >= MIN_COUNT)
    V = len(vocab)
    ndocs = sum(docs.values())
    log_prior = tuple(round(math.log((docs[lab] + 1) / (ndocs + len(labels))), 4) for lab in labels)
    denom = {lab: sum(counts[lab][f] for f in vocab) + ALPHA * V for lab in labels}
    unseen = tuple(round(math.log(ALPHA / denom[lab]), 2) for lab in labels)
    log_lik = {}
    for f in vocab:
        ll = tuple(
            round(math.log((counts[lab][f] + ALPHA) / denom[lab]), 2) if counts[lab][f] else unseen[k]
            for k, lab in enumerate(labels)
        )
        if max(ll) - min(ll) >= MIN_SPREAD:
            log_lik[f] = ll
    return NaiveBayes(labels=labels, log_prior=log_prior, log_lik=log_lik, unseen=unseen)


def fit_transitions(visits: list[list[tuple[str, str, str]]]) -> dict[str, dict[str, float]]:
    """Phase transitions between note divisions, small talk skipped, add-one smoothed."""
    notes = DIVISIONS[:-1]
    counts = {p: collections.Counter() for p in ("<start>",) + notes}
    for rows in visits:
        prev = "<start>"
        for _t, _s, lab in rows:
            if lab == "none":
                continue
            counts[prev][lab] += 1
            prev = lab
    out = {}
    for p, c in counts.items():
        z = sum(c.values()) + len(notes)
        out[p] = {d: round((c[d] + 1) / z, 6) for d in notes}
    return out


def division_examples(visits, mts) -> list[tuple[list[str], str]]:
    ex = [(features(t, s), lab) for rows in visits for t, s, lab in rows]
    for turn_feats, topic in mts:
        feats = [f for tf in turn_feats for f in tf]
        ex.extend([(feats, TOPIC_DIVISION[topic])] * MTS_WEIGHT)
    return ex


def topic_examples(visits, mts) -> list[tuple[list[str], str]]:
    ex = [([f for tf in turn_feats for f in tf], topic) for turn_feats, topic in mts]
    for rows in visits:
        for t, s, lab in rows:
            if lab == "objective_exam":
                ex.append((features(t, s), "exam"))
            elif lab == "objective_results":
                ex.append((features(t, s), "results"))
    return ex


TOPICS = tuple(TOPIC_DIVISION)


def build(visits, mts, temperature: float, keep_threshold: float = 1.01) -> SectionClassifier:
    return SectionClassifier(
        division=fit_nb(division_examples(visits, mts), DIVISIONS),
        topic=fit_nb(topic_examples(visits, mts), TOPICS),
        transitions=fit_transitions(visits),
        temperature=temperature,
        meta={},
        keep_threshold=keep_threshold,
    )


def visit_accuracy(clf: SectionClassifier, visits) -> tuple[int, int]:
    ok = n = 0
    for rows in visits:
        pred = clf.classify((t, s) for t, s, _ in rows)
        for (d, _topic), (_t, _s, lab) in zip(pred, rows):
            ok += d == lab
            n += 1
    return ok, n


THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(18))


def _keep_f1(pairs: list[tuple[float, bool]], threshold: float) -> float:
    """F1 of "note-worthy" when an utterance is kept iff P(none) < threshold."""
    tp = sum(1 for p, gold in pairs if p < threshold and gold)
    fp = sum(1 for p, gold in pairs if p < threshold and not gold)
    fn = sum(1 for p, gold in pairs if p >= threshold and gold)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def choose_parameters(visits, mts) -> tuple[float, float, dict[str, float]]:
    """By 5-fold cross-validation over the ACI-Bench train encounters (fold = position mod 5):
    the keep threshold on P(none) that maximises note-worthy F1, and the temperature that
    maximises division accuracy on note-worthy utterances."""
    folds = 5
    results: dict[str, float] = {}
    models = []
    for k in range(folds):
        train = [v for i, v in enumerate(visits) if i % folds != k]
        held = [v for i, v in enumerate(visits) if i % folds == k]
        models.append((build(train, mts, 1.0), held))
    pairs: list[tuple[float, bool]] = []
    for clf, held in models:
        for rows in held:
            for t, s, lab in rows:
                pairs.append((softmax(clf.division.scores(features(t, s)))["none"], lab != "none"))
    keep = max(THRESHOLDS, key=lambda th: (_keep_f1(pairs, th), -th))
    for th in THRESHOLDS:
        results[f"keep<{th} noteworthy F1"] = round(_keep_f1(pairs, th), 4)
    best_t, best_acc = TEMPERATURES[0], -1.0
    for temp in TEMPERATURES:
        ok = n = 0
        for clf, held in models:
            clf = replace(clf, temperature=temp, keep_threshold=1.01)
            for rows in held:
                pred = clf.classify((t, s) for t, s, _ in rows)
                for (d, _topic), (_t, _s, lab) in zip(pred, rows):
                    if lab != "none":
                        ok += d == lab
                        n += 1
        acc = ok / n
        results[f"T={temp} noteworthy division accuracy"] = round(acc, 4)
        if acc > best_acc:
            best_t, best_acc = temp, acc
    return best_t, keep, results


def to_json(clf: SectionClassifier, meta: dict) -> dict:
    def nb(m: NaiveBayes) -> dict:
        return {
            "labels": list(m.labels),
            "log_prior": list(m.log_prior),
            # centi-nats as integers; per feature only the labels it was seen with, as
            # [label index, value, …]; the others take the label's "unseen" value
            "log_lik_scale": 100,
            "unseen": [round(x * 100) for x in m.unseen],
            "log_lik": {
                k: [x for i, val in enumerate(v) if val != m.unseen[i] for x in (i, round(val * 100))]
                for k, v in sorted(m.log_lik.items())
            },
        }

    return {
        "format": "scribe-section-classifier/1",
        "division": nb(clf.division),
        "topic": nb(clf.topic),
        "transitions": clf.transitions,
        "temperature": clf.temperature,
        "keep_threshold": clf.keep_threshold,
        "meta": meta,
    }


# ------------------------------------------------------------------ evaluation


def evaluate(clf: SectionClassifier, idf) -> dict:
    d = eval_dir()
    report: dict[str, object] = {}
    aci_dev = read_jsonl(d / "aci_bench_dev.jsonl")
    visits = aci_examples(aci_dev, idf)
    ok, n = visit_accuracy(clf, visits)
    labels = [lab for rows in visits for *_x, lab in rows]
    maj = collections.Counter(labels).most_common(1)[0]
    # without the forward pass (each utterance alone)
    ok1 = sum(clf.division.predict(features(t, s)) == lab for rows in visits for t, s, lab in rows)
    pairs = [
        (softmax(clf.division.scores(features(t, s)))["none"], lab != "none")
        for rows in visits
        for t, s, lab in rows
    ]
    report["aci_dev_noteworthy_f1"] = round(_keep_f1(pairs, clf.keep_threshold), 4)
    report["aci_dev_noteworthy_f1_keep_all_baseline"] = round(_keep_f1(pairs, 2.0), 4)
    report["aci_dev_utterance_5way_accuracy"] = round(ok / n, 4)
    report["aci_dev_utterance_5way_accuracy_naive_bayes_alone"] = round(ok1 / n, 4)
    report["aci_dev_majority_baseline"] = f"{maj[0]} {maj[1] / n:.4f}"
    report["aci_dev_utterances"] = n
    # division accuracy on the utterances the reference note draws on (silver), as if kept
    ok4 = n4 = 0
    for rows in visits:
        pred = replace(clf, keep_threshold=1.01).classify((t, s) for t, s, _ in rows)
        for (dd, _topic), (_t, _s, lab) in zip(pred, rows):
            if lab != "none":
                n4 += 1
                ok4 += dd == lab
    report["aci_dev_noteworthy_4way_division_accuracy"] = round(ok4 / n4, 4)

    mts_dev = read_jsonl(d / "mts_dialog_dev.jsonl")
    ok_soap = ok_topic = n_m = 0
    gold_letters = []
    for r in mts_dev:
        topic = MTS_TOPIC[r["section_header"]]
        segs = segments_from_turns(r["dialogue"])
        feats = [f for s in segs for f in features(s.text, str(s.speaker))]
        pred = clf.topic.predict(feats)
        ok_topic += pred == topic
        g = SOAP_LETTER.get(TOPIC_DIVISION[topic], SOAP_LETTER.get(topic))
        if topic in ("assessment", "plan"):
            g = SOAP_LETTER[topic]
        p = SOAP_LETTER.get(TOPIC_DIVISION[pred]) if pred not in ("assessment", "plan") else SOAP_LETTER[pred]
        gold_letters.append(g)
        ok_soap += p == g
        n_m += 1
    maj_l = collections.Counter(gold_letters).most_common(1)[0]
    report["mts_dev_soap4_accuracy"] = round(ok_soap / n_m, 4)
    report["mts_dev_soap4_majority_baseline"] = f"{maj_l[0]} {maj_l[1] / n_m:.4f}"
    report["mts_dev_topic12_accuracy"] = round(ok_topic / n_m, 4)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, default=ROOT / "scribe" / "notes" / "data" / "section_classifier.json"
    )
    ap.add_argument("--eval", action="store_true", help="report accuracy on the dev files")
    args = ap.parse_args(argv)

    d = eval_dir()
    aci = read_jsonl(d / "train" / "aci_bench_train.jsonl")
    mts_raw = read_jsonl(d / "train" / "mts_dialog_train.jsonl")
    idf = idf_table(aci)
    visits = aci_examples(aci, idf)
    mts = mts_examples(mts_raw)
    temp, keep, cv = choose_parameters(visits, mts)
    clf = build(visits, mts, temp, keep)
    label_counts = collections.Counter(lab for rows in visits for *_x, lab in rows)
    meta = {
        "trained_on": ["train/aci_bench_train.jsonl", "train/mts_dialog_train.jsonl"],
        "aci_train_utterances": sum(label_counts.values()),
        "aci_train_label_counts": dict(sorted(label_counts.items())),
        "mts_train_dialogues": len(mts),
        "cv_noteworthy_f1": cv,
        "alpha": ALPHA,
        "min_count": MIN_COUNT,
        "licence": "fitted on ACI-Bench and MTS-Dialog train splits (CC BY 4.0)",
    }
    data = to_json(clf, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    size = args.out.stat().st_size
    print(
        f"wrote {args.out} ({size / 1024:.0f} KiB); keep if P(none) < {keep} (train CV F1 "
        f"{cv[f'keep<{keep} noteworthy F1']}); temperature {temp} (train CV note-worthy "
        f"division accuracy {cv[f'T={temp} noteworthy division accuracy']})"
    )
    if args.eval:
        report = evaluate(from_json(data), idf)
        for k, v in report.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
