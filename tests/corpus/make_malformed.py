"""Writes tests/corpus/malformed/: one small file per way input data can be broken.

Run ``python tests/corpus/make_malformed.py`` after changing a case; it rewrites every file,
``README.md`` (the table of cases) and ``expected.json`` (what the test asserts per file:
the issues the report must name, as ``Type/id`` and a field, and the patients that must still
be processed). All data is synthetic. Every file holds a well-formed patient ``good`` with a
BMI Observation, except where the break takes the whole file down (bad JSON in a Bundle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COMPACT = (",", ":")
OUT = Path(__file__).resolve().parent / "malformed"
LOINC = "http://loinc.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
GOOD = [
    {
        "resourceType": "Patient",
        "id": "good",
        "gender": "female",
        "birthDate": "1960-05-20",
        "name": [{"family": "Corpus", "given": ["Goodrow"]}],
    },
    {
        "resourceType": "Observation",
        "id": "good-bmi",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "39156-5"}]},
        "subject": {"reference": "Patient/good"},
        "effectiveDateTime": "2026-09-01",
        "valueQuantity": {"value": 32.5, "unit": "kg/m2"},
    },
]


def obs(oid: object, **fields: Any) -> dict[str, Any]:
    """A BMI Observation about ``good`` with ``fields`` replacing or adding elements."""
    return {**GOOD[1], "id": oid, **fields}


def hvs(oid: str, *answers: str) -> dict[str, Any]:
    """A Hunger Vital Sign item answered with the given LOINC answer codes."""
    return obs(
        oid,
        code={"coding": [{"system": LOINC, "code": "88122-7"}]},
        valueCodeableConcept={"coding": [{"system": LOINC, "code": a} for a in answers]},
        valueQuantity=None,
    )


def condition(cid: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}]},
        "subject": {"reference": "Patient/good"},
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        **fields,
    }


def patient(pid: str, **fields: Any) -> dict[str, Any]:
    return {**GOOD[0], "id": pid, **fields}


def nested(oid: str, depth: int) -> str:
    """A BMI Observation whose extension nests ``depth`` levels (as text: too deep to dump)."""
    head = json.dumps(obs(oid))[:-1]
    levels = '{"extension":[' * depth
    return f'{head}, "extension": [{levels}{{"url": "urn:x"}}{"]}" * depth}]}}'


def bundle(*resources: object, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
        **fields,
    }


def clean(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if v is not None}


# (file name, what it breaks, content, expected issues [(Type/id, field)], processed patients)
Case = tuple[str, str, object, list[tuple[str, str]], list[str]]
NESTED = nested("deep", 5000)
BUNDLE_TEXT = json.dumps(bundle(*GOOD), indent=1)
CASES: list[Case] = [
    # -- bad JSON ----------------------------------------------------------------------------
    (
        "bundle-truncated.json",
        "Bundle cut off mid-way",
        BUNDLE_TEXT[:200],
        [("?/?", "invalid JSON")],
        [],
    ),
    (
        "bundle-trailing-comma.json",
        "trailing comma after the last entry",
        BUNDLE_TEXT[:-4] + ",\n ]\n}",
        [("?/?", "invalid JSON")],
        [],
    ),
    (
        "bundle-bom.json",
        "UTF-8 byte order mark before the Bundle",
        "\ufeff" + BUNDLE_TEXT,
        [],
        ["good"],
    ),
    (
        "bundle-deeply-nested.json",
        "Bundle nested 5000 levels deep",
        '{"resourceType":"Bundle","entry":[' + NESTED + "]}",
        [("?/?", "nested too deeply")],
        [],
    ),
    (
        "bundle-top-level-array.json",
        "a JSON array instead of a Bundle",
        json.dumps(GOOD),
        [("?/?", "resourceType")],
        [],
    ),
    (
        "bundle-is-a-patient.json",
        "a bare Patient instead of a Bundle",
        json.dumps(GOOD[0]),
        [("?/?", "resourceType")],
        [],
    ),
    (
        "ndjson-bom.ndjson",
        "byte order mark before line 1",
        "\ufeff" + "\n".join(map(json.dumps, GOOD)),
        [],
        ["good"],
    ),
    (
        "ndjson-truncated-line.ndjson",
        "last line cut off",
        [*GOOD, json.dumps(obs("cut"))[:60]],
        [("?/?", "invalid JSON")],
        ["good"],
    ),
    (
        "ndjson-trailing-comma.ndjson",
        "trailing comma inside an object",
        [*GOOD, '{"resourceType": "Observation", "id": "tc",}'],
        [("?/?", "invalid JSON")],
        ["good"],
    ),
    (
        "ndjson-nan-value.ndjson",
        "NaN as valueQuantity.value",
        [*GOOD, json.dumps(obs("nan-bmi", valueQuantity={"value": float("nan"), "unit": "kg/m2"}))],
        [("Observation/nan-bmi", "value")],
        ["good"],
    ),
    (
        "ndjson-infinity-value.ndjson",
        "1e400 (Infinity) as valueQuantity.value",
        [*GOOD, json.dumps(obs("inf-bmi"))[:-2].replace('"value": 32.5', '"value": 1e400') + "}}"],
        [("Observation/inf-bmi", "value")],
        ["good"],
    ),
    (
        "ndjson-raw-control-char.ndjson",
        "raw NUL byte inside a JSON string",
        [*GOOD, json.dumps(obs("ctl", status="fi\x00nal")).replace("\\u0000", "\x00")],
        [("?/?", "invalid JSON")],
        ["good"],
    ),
    (
        "ndjson-not-an-object.ndjson",
        "a line that is a JSON array",
        [*GOOD, "[1, 2, 3]"],
        [("?/?", "not a JSON object")],
        ["good"],
    ),
    (
        "ndjson-deeply-nested-extension.ndjson",
        "extension nested 5000 levels deep",
        [*GOOD, NESTED],
        [("?/?", "nested too deeply")],
        ["good"],
    ),
    (
        "ndjson-moderately-nested-extension.ndjson",
        "extension nested 300 levels (readable)",
        [*GOOD, nested("deep300", 300)],
        [],
        ["good"],
    ),
    # -- wrong types -------------------------------------------------------------------------
    (
        "observation-code-as-number.ndjson",
        "Observation.code is a number",
        [*GOOD, obs("code-num", code=8302)],
        [("Observation/code-num", "code")],
        ["good"],
    ),
    (
        "condition-code-as-number.ndjson",
        "Condition.code is a number",
        [*GOOD, condition("cond-num", code=250)],
        [("Condition/cond-num", "code")],
        ["good"],
    ),
    (
        "coding-not-a-list.ndjson",
        "code.coding is an object, not a list",
        [*GOOD, obs("coding-obj", code={"coding": {"system": LOINC, "code": "39156-5"}})],
        [("Observation/coding-obj", "code")],
        ["good"],
    ),
    (
        "coding-entries-not-objects.ndjson",
        "code.coding holds strings and numbers",
        [*GOOD, obs("coding-str", code={"coding": ["39156-5", 7]})],
        [("Observation/coding-str", "code")],
        ["good"],
    ),
    (
        "coding-code-as-number.ndjson",
        "coding.code is a number",
        [*GOOD, obs("code-int", code={"coding": [{"system": LOINC, "code": 391565}]})],
        [("Observation/code-int", "code")],
        ["good"],
    ),
    (
        "subject-as-string.ndjson",
        "subject is a string, not a Reference",
        [*GOOD, obs("subj-str", subject="Patient/good")],
        [("Observation/subj-str", "subject")],
        ["good"],
    ),
    (
        "subject-reference-as-number.ndjson",
        "subject.reference is a number",
        [*GOOD, obs("subj-num", subject={"reference": 12})],
        [("Observation/subj-num", "subject")],
        ["good"],
    ),
    (
        "value-quantity-value-as-string.ndjson",
        "valueQuantity.value is a string",
        [*GOOD, obs("val-str", valueQuantity={"value": "41", "unit": "kg/m2"})],
        [("Observation/val-str", "value")],
        ["good"],
    ),
    (
        "value-quantity-as-list.ndjson",
        "valueQuantity is a list",
        [*GOOD, obs("vq-list", valueQuantity=[{"value": 41}])],
        [("Observation/vq-list", "value")],
        ["good"],
    ),
    (
        "value-codeable-concept-as-string.ndjson",
        "valueCodeableConcept is a string",
        [*GOOD, clean(hvs("vcc-str")) | {"valueCodeableConcept": "Often true"}],
        [("Observation/vcc-str", "valueCodeableConcept")],
        ["good"],
    ),
    (
        "birthdate-as-number.ndjson",
        "Patient.birthDate is a number",
        [*GOOD, patient("bd-num", birthDate=19600520)],
        [("Patient/bd-num", "birthDate")],
        ["good", "bd-num"],
    ),
    (
        "birthdate-impossible.ndjson",
        "Patient.birthDate is 1960-02-31",
        [*GOOD, patient("bd-bad", birthDate="1960-02-31")],
        [("Patient/bd-bad", "birthDate")],
        ["good", "bd-bad"],
    ),
    (
        "effective-datetime-garbage.ndjson",
        "effectiveDateTime is not a date",
        [*GOOD, obs("eff-bad", effectiveDateTime="last tuesday")],
        [("Observation/eff-bad", "effectiveDateTime")],
        ["good"],
    ),
    (
        "onset-datetime-as-object.ndjson",
        "Condition.onsetDateTime is an object",
        [*GOOD, condition("onset-obj", onsetDateTime={"year": 2020})],
        [("Condition/onset-obj", "onsetDateTime")],
        ["good"],
    ),
    (
        "status-as-list.ndjson",
        "Observation.status is a list",
        [*GOOD, obs("status-list", status=["final"])],
        [("Observation/status-list", "status")],
        ["good"],
    ),
    (
        "gender-as-boolean.ndjson",
        "Patient.gender is a boolean",
        [*GOOD, patient("gender-bool", gender=True)],
        [("Patient/gender-bool", "gender")],
        ["good", "gender-bool"],
    ),
    (
        "category-not-a-list.ndjson",
        "Observation.category is an object",
        [*GOOD, obs("cat-obj", category={"coding": []})],
        [("Observation/cat-obj", "category")],
        ["good"],
    ),
    (
        "component-as-number.ndjson",
        "Observation.component is a number",
        [*GOOD, obs("comp-num", component=3)],
        [("Observation/comp-num", "component")],
        ["good"],
    ),
    (
        "telecom-as-string.ndjson",
        "Patient.telecom is a string",
        [*GOOD, patient("tel-str", telecom="555-0100")],
        [("Patient/tel-str", "telecom")],
        ["good", "tel-str"],
    ),
    (
        "questionnaire-item-as-object.ndjson",
        "QuestionnaireResponse.item is an object",
        [
            *GOOD,
            {
                "resourceType": "QuestionnaireResponse",
                "id": "qr-obj",
                "status": "completed",
                "subject": {"reference": "Patient/good"},
                "authored": "2026-09-01",
                "item": {"linkId": "/88122-7", "answer": 5},
            },
        ],
        [("QuestionnaireResponse/qr-obj", "item")],
        ["good"],
    ),
    (
        "questionnaire-answer-as-number.ndjson",
        "QuestionnaireResponse answer is a number",
        [
            *GOOD,
            {
                "resourceType": "QuestionnaireResponse",
                "id": "qr-ans",
                "status": "completed",
                "subject": {"reference": "Patient/good"},
                "authored": "2026-09-01",
                "item": [{"linkId": "/88122-7", "answer": 5}],
            },
        ],
        [],
        ["good"],
    ),
    # -- missing or wrong identity -----------------------------------------------------------
    (
        "missing-subject.ndjson",
        "Observation without subject",
        [*GOOD, clean(obs("no-subj", subject=None))],
        [("Observation/no-subj", "subject")],
        ["good"],
    ),
    (
        "missing-id.ndjson",
        "Observation without id",
        [*GOOD, clean(obs("x", id=None))],
        [("Observation/?", "id")],
        ["good"],
    ),
    (
        "patient-missing-id.ndjson",
        "Patient without id",
        [*GOOD, clean(patient("x", id=None))],
        [("Patient/?", "id")],
        ["good"],
    ),
    (
        "id-empty-string.ndjson",
        "id is an empty string",
        [*GOOD, obs("")],
        [("Observation/?", "id")],
        ["good"],
    ),
    (
        "id-as-number.ndjson",
        "id is a number",
        [*GOOD, obs(42)],
        [("Observation/?", "id")],
        ["good"],
    ),
    (
        "unknown-resource-type.ndjson",
        "resourceType Gizmo",
        [*GOOD, {"resourceType": "Gizmo", "id": "gz"}],
        [("Gizmo/gz", "resourceType")],
        ["good"],
    ),
    (
        "resource-type-typo.ndjson",
        "resourceType Obsevation",
        [*GOOD, obs("typo", resourceType="Obsevation")],
        [("Obsevation/typo", "resourceType")],
        ["good"],
    ),
    (
        "resource-type-datatype.ndjson",
        "resourceType names a datatype",
        [*GOOD, obs("dt", resourceType="CodeableConcept")],
        [("CodeableConcept/dt", "resourceType")],
        ["good"],
    ),
    (
        "resource-type-missing.ndjson",
        "no resourceType",
        [*GOOD, {"id": "rt-none", "status": "final"}],
        [("?/rt-none", "resourceType")],
        ["good"],
    ),
    (
        "resource-type-as-number.ndjson",
        "resourceType is a number",
        [*GOOD, {"resourceType": 7, "id": "rt-num"}],
        [("?/rt-num", "resourceType")],
        ["good"],
    ),
    # -- huge values -------------------------------------------------------------------------
    (
        "value-1e308.ndjson",
        "valueQuantity.value 1e308 (finite, accepted)",
        [*GOOD, obs("huge-bmi", valueQuantity={"value": 1e308, "unit": "kg/m2"})],
        [],
        ["good"],
    ),
    (
        "id-100k-chars.ndjson",
        "an id of 100,000 characters",
        [*GOOD, obs("a" * 100_000)],
        [("Observation/?", "id")],
        ["good"],
    ),
    (
        "display-100k-chars.ndjson",
        "a coding display of 100,000 characters (accepted)",
        [
            *GOOD,
            obs(
                "long-display",
                code={"coding": [{"system": LOINC, "code": "39156-5", "display": "x" * 100_000}]},
            ),
        ],
        [],
        ["good"],
    ),
    (
        "ten-thousand-codings.ndjson",
        "10,000 codings in one code (accepted)",
        [
            *GOOD,
            obs(
                "many-codings",
                code={
                    "coding": [{"code": str(n)} for n in range(10_000)]
                    + [{"system": LOINC, "code": "39156-5"}]
                },
            ),
        ],
        [],
        ["good"],
    ),
    # -- unicode oddities --------------------------------------------------------------------
    (
        "nul-in-id.ndjson",
        "escaped NUL inside an id",
        [*GOOD, obs("nul\u0000id")],
        [("Observation/?", "id")],
        ["good"],
    ),
    (
        "nul-in-display.ndjson",
        "escaped NUL inside a display (accepted)",
        [
            *GOOD,
            obs(
                "nul-display",
                code={"coding": [{"system": LOINC, "code": "39156-5", "display": "BMI\u0000"}]},
            ),
        ],
        [],
        ["good"],
    ),
    (
        "lone-surrogate-in-id.ndjson",
        "escaped lone surrogate in an id",
        [*GOOD, obs("sur\ud800")],
        [("Observation/?", "id")],
        ["good"],
    ),
    (
        "lone-surrogate-in-patient.ndjson",
        "lone surrogates in gender, language and name",
        [
            *GOOD,
            patient(
                "sur-pat",
                gender="\udfff",
                name=[{"family": "\ud800"}],
                communication=[
                    {
                        "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "e\ud800s"}]},
                        "preferred": True,
                    }
                ],
            ),
        ],
        [("Patient/sur-pat", "gender"), ("Patient/sur-pat", "communication.language")],
        ["good", "sur-pat"],
    ),
    (
        "rtl-override-in-id.ndjson",
        "right-to-left override in an id",
        [*GOOD, obs("evil\u202egpj.exe")],
        [("Observation/?", "id")],
        ["good"],
    ),
    (
        "rtl-override-in-subject.ndjson",
        "right-to-left override in subject.reference",
        [*GOOD, obs("rtl-subj", subject={"reference": "Patient/\u202edoog"})],
        [("Observation/rtl-subj", "subject")],
        ["good"],
    ),
    (
        "nfc-vs-nfd-ids.ndjson",
        "two Patient ids jos\u00e9 in NFC and NFD",
        [*GOOD, patient("jos\u00e9"), patient("jose\u0301")],
        [("Patient/?", "id"), ("Patient/?", "id")],
        ["good"],
    ),
    # -- contradictions ----------------------------------------------------------------------
    (
        "condition-active-and-refuted.ndjson",
        "clinicalStatus active, verificationStatus refuted",
        [
            *GOOD,
            condition(
                "refuted",
                verificationStatus={"coding": [{"system": VERIFICATION, "code": "refuted"}]},
            ),
        ],
        [("Condition/refuted", "verificationStatus")],
        ["good"],
    ),
    (
        "condition-active-and-resolved.ndjson",
        "clinicalStatus codings active and resolved",
        [
            *GOOD,
            condition(
                "act-res",
                clinicalStatus={
                    "coding": [
                        {"system": CLINICAL, "code": "active"},
                        {"system": CLINICAL, "code": "resolved"},
                    ]
                },
            ),
        ],
        [("Condition/act-res", "clinicalStatus")],
        ["good"],
    ),
    (
        "answer-codings-disagree.ndjson",
        "Hunger Vital Sign answered Often true and Never true",
        [*GOOD, clean(hvs("hvs-both", "LA28397-0", "LA28398-8"))],
        [("Observation/hvs-both", "valueCodeableConcept")],
        ["good"],
    ),
    # -- duplicates --------------------------------------------------------------------------
    (
        "duplicate-observation.ndjson",
        "same Observation id twice, different values",
        [
            *GOOD,
            obs("dup", valueQuantity={"value": 22, "unit": "kg/m2"}),
            obs("dup", valueQuantity={"value": 44, "unit": "kg/m2"}),
        ],
        [("Observation/dup", "duplicate")],
        ["good"],
    ),
    (
        "duplicate-patient.ndjson",
        "same Patient id twice, different birth dates",
        [*GOOD, patient("twin"), patient("twin", birthDate="1990-01-01")],
        [("Patient/twin", "duplicate")],
        ["good", "twin"],
    ),
    # -- references --------------------------------------------------------------------------
    (
        "reference-to-missing-patient.ndjson",
        "subject names a Patient not in the input",
        [*GOOD, obs("orphan", subject={"reference": "Patient/nobody"})],
        [("Observation/orphan", "subject")],
        ["good"],
    ),
    (
        "reference-contained-only.ndjson",
        "subject is a contained reference (#p1)",
        [*GOOD, obs("contained", subject={"reference": "#p1"}, contained=[patient("p1")])],
        [("Observation/contained", "subject")],
        ["good"],
    ),
    (
        "reference-to-group.ndjson",
        "subject is a Group",
        [*GOOD, obs("to-group", subject={"reference": "Group/g1"})],
        [("Observation/to-group", "subject")],
        ["good"],
    ),
    (
        "reference-absolute-url.ndjson",
        "subject is an absolute URL with _history (accepted)",
        [
            *GOOD,
            obs(
                "abs-ref", subject={"reference": "https://ehr.example/fhir/Patient/good/_history/3"}
            ),
        ],
        [],
        ["good"],
    ),
    (
        "bundle-urn-reference-unresolved.json",
        "subject urn:uuid that no entry has",
        bundle(
            *GOOD,
            obs(
                "urn-orphan", subject={"reference": "urn:uuid:7f1c0f64-0000-4000-8000-000000000000"}
            ),
        ),
        [("Observation/urn-orphan", "subject")],
        ["good"],
    ),
    # -- Bundles -----------------------------------------------------------------------------
    (
        "bundle-empty.json",
        "a Bundle with no entries (accepted)",
        {"resourceType": "Bundle", "type": "collection"},
        [],
        [],
    ),
    (
        "bundle-entry-not-a-list.json",
        "Bundle.entry is an object",
        {"resourceType": "Bundle", "type": "collection", "entry": {"resource": GOOD[0]}},
        [("Bundle/?", "entry")],
        [],
    ),
    (
        "bundle-entry-without-resource.json",
        "an entry with only a fullUrl",
        {**bundle(*GOOD), "entry": [*bundle(*GOOD)["entry"], {"fullUrl": "urn:uuid:1"}]},
        [("?/?", "entry.resource")],
        ["good"],
    ),
    (
        "bundle-entry-not-an-object.json",
        "an entry that is a number",
        {**bundle(*GOOD), "entry": [*bundle(*GOOD)["entry"], 5]},
        [("?/?", "entry.resource")],
        ["good"],
    ),
    (
        "bundle-entry-resource-string.json",
        "entry.resource is a string",
        bundle(*GOOD, "Observation/1"),
        [("?/?", "not a JSON object")],
        ["good"],
    ),
    (
        "bundle-wrong-type.json",
        "Bundle.type is a number (read anyway)",
        bundle(*GOOD, type=42),
        [],
        ["good"],
    ),
    (
        "bundle-fullurl-as-number.json",
        "entry.fullUrl is a number",
        {**bundle(*GOOD), "entry": [{"fullUrl": 1, "resource": r} for r in GOOD]},
        [],
        ["good"],
    ),
]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    expected: dict[str, Any] = {}
    rows = ["| file | breaks |", "| --- | --- |"]
    for name, breaks, content, issues, processed in CASES:
        if isinstance(content, str):
            text = content
        elif name.endswith(".ndjson"):
            lines = content if isinstance(content, list) else [content]
            text = "\n".join(
                x if isinstance(x, str) else json.dumps(x, separators=COMPACT) for x in lines
            )
        else:
            text = json.dumps(content, indent=1)
        (OUT / name).write_text(text + "\n", encoding="utf-8", errors="surrogatepass")
        expected[name] = {"issues": issues, "processed": processed}
        rows.append(f"| {name} | {breaks} |")
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
    readme = [
        "# Malformed inputs",
        "",
        "One file per way input can be broken; `tests/unit/test_malformed_corpus.py` runs each",
        "through the file source and the pipeline, checks `expected.json`, and all of them at",
        "once through `fhir-tailor sync` (no traceback; exit 0 for the NDJSON files, 1 for the",
        "Bundle files, some of which are not FHIR at all). Regenerate with",
        "`python tests/corpus/make_malformed.py`. Synthetic data only.",
        "",
        *rows,
    ]
    (OUT / "README.md").write_text("\n".join(readme) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
