"""Message templates: placeholders filled from a context, or no message at all."""

from __future__ import annotations

from smartsvc.rules.templates import placeholders, render

FACTS = {"product": {"telemetry": {"battery_pct": 18.0}, "attributes": {"connectors": ["type2", "ccs"],
                                                                        "length_m": 2.6912}},
         "geofence.metadata.ev": True, "user.local_time": "17:40"}


def test_placeholders_are_listed_in_order():
    assert placeholders("{a.b} and {c.d} {a.b}") == ["a.b", "c.d", "a.b"]


def test_placeholders_are_filled_as_a_person_reads_them():
    text = render("{product.telemetry.battery_pct} % at {user.local_time}; {product.attributes.connectors}; "
                  "{product.attributes.length_m} m; charger: {geofence.metadata.ev}", FACTS)

    assert text == "18 % at 17:40; type2, ccs; 2.69 m; charger: yes"


def test_a_template_without_placeholders_is_itself():
    assert render("Time for a break", {}) == "Time for a break"


def test_a_missing_fact_means_no_message():
    assert render("ETA {trip.eta_s} s", FACTS) is None


def test_huge_integers_are_written_out():
    assert render("{trip.eta_s}", {"trip.eta_s": 10 ** 30}) == "1" + "0" * 30
