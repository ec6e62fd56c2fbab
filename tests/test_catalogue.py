"""The catalogue against the Tuist doc: every documented name, its type and its tags.

``golden/documented_names.txt`` is the doc's metric headings copied verbatim (an independent source: the
catalogue must not be checked against itself).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from telemetry.catalogue import (
    BY_NAME,
    CATALOGUE,
    OVERFLOW_METRIC,
    Kind,
    MetricSpec,
    documented,
    documented_names,
    spec,
)

DOC = Path(__file__).parent / "golden" / "documented_names.txt"
# The doc's type words (Korean where the translation left them so) and the Prometheus type each implies.
WORDS = {"카운터": "counter", "합계": "sum", "히스토그램": "histogram"}
KIND_OF_WORD = {"counter": Kind.COUNTER, "count": Kind.COUNTER, "sum": Kind.COUNTER, "last_value": Kind.GAUGE,
                "histogram": Kind.HISTOGRAM, "distribution": Kind.HISTOGRAM}
TAGS = {"이유": "reason"}


def doc_entries() -> list[tuple[str, str, tuple[str, ...]]]:
    entries = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        name, word, tags = line.split(" ")
        labels = () if tags == "-" else tuple(TAGS.get(t, t) for t in tags.split(","))
        entries.append((name, WORDS.get(word, word), labels))
    return entries


def family_of(sample: str) -> MetricSpec:
    """The family a documented sample name belongs to."""
    owners = [s for s in CATALOGUE if sample in s.doc_names]
    assert len(owners) == 1, f"{sample} is claimed by {[s.name for s in owners]}"
    return owners[0]


def test_the_doc_lists_53_names_and_the_catalogue_documents_exactly_those() -> None:
    names = [n for n, _, _ in doc_entries()]
    assert len(names) == 53 == len(set(names))
    assert sorted(documented_names()) == sorted(names)
    assert len(documented_names()) == 53


@pytest.mark.parametrize(("sample", "word", "tags"), doc_entries(), ids=[e[0] for e in doc_entries()])
def test_documented_name_type_and_tags(sample: str, word: str, tags: tuple[str, ...]) -> None:
    family = family_of(sample)
    if family.kind is Kind.HISTOGRAM:
        # A histogram the doc lists as X_sum (sum) and X_bucket (distribution): one histogram family X.
        assert sample in family.sample_names or sample == family.name
        assert word in ("histogram", "distribution", "sum")
        if sample.endswith("_sum"):
            assert word == "sum"
        else:
            assert KIND_OF_WORD[word] is Kind.HISTOGRAM
    else:
        assert family.name == sample, "counters and gauges are exposed under the documented name itself"
        assert family.kind is KIND_OF_WORD[word]
        assert family.doc_type == word
    if tags:
        assert family.labels == tags
    assert family.documented


def test_family_names_are_what_prometheus_will_see() -> None:
    families = {s.name: s.kind for s in documented()}
    assert len(families) == 47  # 53 doc names; six histograms are listed twice (_sum and _bucket)
    assert families["tuist_http_request_duration_nanosecond"] is Kind.HISTOGRAM
    assert families["tuist_storage_get_object_size_duration_miliseconds"] is Kind.HISTOGRAM
    assert families["tuist_storage_multipart_start_upload_duration_count"] is Kind.COUNTER
    assert families["tuist_projects_total"] is Kind.GAUGE
    # The _bucket and _sum spellings are samples of the family, never families of their own.
    assert not any(n.endswith(("_bucket", "_sum")) for n in families)


def test_quirky_spellings_are_kept_and_not_corrected() -> None:
    assert "tuist_storage_get_object_size_duration_milliseconds" not in BY_NAME
    assert "tuist_http_request_duration_nanoseconds" not in BY_NAME
    assert "tuist_storage_multipart_start_upload_count" not in BY_NAME


def test_allowed_values_follow_the_doc() -> None:
    runs = spec("tuist_runs_total")
    assert runs.allowed == {"is_ci": {"true", "false"}, "status": {"0", "1"}}
    assert spec("tuist_runs_duration_milliseconds").allowed == runs.allowed
    assert spec("tuist_cache_events_total").allowed == {"event_type": {"local_hit", "remote_hit", "miss"}}
    assert spec("tuist_authentication_token_refresh_error_total").allowed == {
        "reason": {"invalid_token_type", "invalid_token"}}


def test_units_and_buckets() -> None:
    for s in CATALOGUE:
        if s.kind is Kind.HISTOGRAM:
            assert s.buckets and list(s.buckets) == sorted(set(s.buckets)), s.name
            assert s.unit in ("ms", "ns", "By", "s"), s.name
            suffix = {"ms": ("milliseconds", "miliseconds"), "ns": ("nanosecond", "nanoseconds"),
                      "By": ("bytes",), "s": ("seconds",)}[s.unit]
            assert s.name.endswith(suffix), f"{s.name}: unit {s.unit} does not match its name"
        else:
            assert s.buckets == ()
    assert spec("tuist_cache_uploaded_bytes").unit == "By"


def test_every_name_is_a_valid_prometheus_name_and_unique() -> None:
    import re

    names = [s.name for s in CATALOGUE]
    assert len(names) == len(set(names))
    for s in CATALOGUE:
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s.name)
        for label in s.labels:
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label) and not label.startswith("__")
            assert label != "le"
        assert s.help and "\n" not in s.help


def test_project_owned_metrics_are_not_documented() -> None:
    extra = {s.name for s in CATALOGUE if not s.documented}
    assert OVERFLOW_METRIC in extra
    assert extra.isdisjoint(documented_names())
    assert all(s.doc_names == () for s in CATALOGUE if not s.documented)


def test_spec_lookup_names_close_matches() -> None:
    assert spec("tuist_runs_total").name == "tuist_runs_total"
    with pytest.raises(KeyError, match=r"'tuist_runs_count' is not in the catalogue; did you mean .*tuist_runs"):
        spec("tuist_runs_count")
    with pytest.raises(KeyError, match="is not in the catalogue"):
        spec("nothing_like_it")


def test_spec_rejects_inconsistent_definitions() -> None:
    with pytest.raises(ValueError, match="only histograms, have buckets"):
        MetricSpec("x", Kind.COUNTER, "h", "d", "x.y", buckets=(1.0,))
    with pytest.raises(ValueError, match="only histograms, have buckets"):
        MetricSpec("x", Kind.HISTOGRAM, "h", "d", "x.y")
    with pytest.raises(ValueError, match="strictly increasing"):
        MetricSpec("x", Kind.HISTOGRAM, "h", "d", "x.y", buckets=(2.0, 1.0))
    with pytest.raises(ValueError, match="unknown labels"):
        MetricSpec("x", Kind.COUNTER, "h", "d", "x.y", labels=("a",), allowed={"b": frozenset({"1"})})
    for bad in ("x", "X.Y", "x_total", "1x.y"):
        with pytest.raises(ValueError, match="not an OpenTelemetry-style instrument name"):
            MetricSpec("x_total", Kind.COUNTER, "h", "d", bad)
    s = MetricSpec("x", Kind.COUNTER, "h", "d", "x.y", labels=("a",), allowed={"a": frozenset({"1"})})
    with pytest.raises(TypeError):
        s.allowed["a"] = frozenset()  # type: ignore[index]
