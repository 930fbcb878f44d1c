"""gcp_cost: the hourly cost, how long the credit lasts (on-demand and Spot, with idle stop), the
figures checked against values worked out by hand, and the docs quoting the same figures."""

from __future__ import annotations

import pytest
from ansible.module_utils.gcp_cost import estimate, money_lasts
from project import REPO


def test_cost_adds_up_and_credit_days(tables):
    prices = tables["prices"]
    cost = estimate(prices, "t4", False, "pd-balanced", 100, 17, 300)
    vm = 0.189999 + 0.35
    running = vm + 0.005 + (100 * 0.10 + 17 * 0.02) / 730
    stopped = 0.010 + (100 * 0.10 + 17 * 0.02) / 730
    assert cost["running_per_hour"] == pytest.approx(running, abs=1e-4)
    assert cost["stopped_per_hour"] == pytest.approx(stopped, abs=1e-4)
    assert cost["credit_days_24h"] == pytest.approx(300 / (24 * running), abs=0.05)
    assert cost["credit_days_8h_per_day"] == pytest.approx(300 / (8 * running + 16 * stopped), abs=0.05)
    assert set(cost["profiles"]) == {"t4", "l4", "a100"}
    assert all(p["spot_per_hour"] < p["on_demand_per_hour"] for p in cost["profiles"].values())
    assert cost["price_table_date"] == str(prices["date"]) and "cloud.google.com" in cost["price_table_source"]
    spot = estimate(prices, "t4", True, "pd-balanced", 100, 17, 300)
    assert spot["running_per_hour"] < cost["running_per_hour"]


def test_docs_quote_the_price_table(tables):
    """docs/instances-and-costs.md must show the table's date and hourly figures (one source of prices)."""
    doc = (REPO / "docs" / "instances-and-costs.md").read_text()
    prices = tables["prices"]
    assert str(prices["date"]) in doc
    for name, row in prices["profiles"].items():
        on_demand = float(row["machine_on_demand"]) + float(row["gpu_on_demand"])
        spot = float(row["machine_spot"]) + float(row["gpu_spot"])
        line = next(ln for ln in doc.splitlines() if ln.startswith(f"| {name} | {on_demand:.3f} |"))
        assert f"| {spot:.3f} |" in line, line


# --- plan figures, worked out by hand from the price table of 2026-11-27 ---------------------------
# T4, 100 GB pd-balanced, 18 GB in the bucket, 300 USD, 8 h/day, idle stop 30 min:
#   disk + bucket per hour = (100 x 0.10 + 18 x 0.02) / 730 = 0.014192
#   stopped                = 0.010 (idle IP) + 0.014192 = 0.024192 /h
#   on-demand running      = 0.189999 + 0.35 + 0.005 (IP) + 0.014192 = 0.559191 /h
#   Spot running           = 0.04 + 0.14 + 0.0025 (IP in use by Spot) + 0.014192 = 0.196692 /h
#   billed running hours   = 8 + 30/60 = 8.5 per day
#   on-demand per day      = 8.5 x 0.559191 + 15.5 x 0.024192 = 5.1281 -> 300 / 5.1281 = 58.5 days
#   Spot per day           = 8.5 x 0.196692 + 15.5 x 0.024192 = 2.0469 -> 300 / 2.0469 = 146.6 days
#   left on 24 h           = 300 / (24 x 0.559191) = 22.4 days; Spot 300 / (24 x 0.196692) = 63.6 days

def test_money_lasts_matches_the_hand_computed_t4_figures(tables):
    m = money_lasts(tables["prices"], "t4", "pd-balanced", 100, 18, 300, 8, 30)
    assert m["running_hours_per_day"] == 8.5
    assert m["on_demand"]["running_per_hour"] == pytest.approx(0.5592, abs=1e-4)
    assert m["spot"]["running_per_hour"] == pytest.approx(0.1967, abs=1e-4)
    assert m["spot"]["stopped_per_hour"] == m["on_demand"]["stopped_per_hour"] == pytest.approx(0.0242, abs=1e-4)
    assert m["on_demand"]["per_day"] == pytest.approx(5.13, abs=0.01)
    assert m["spot"]["per_day"] == pytest.approx(2.05, abs=0.01)
    assert m["on_demand"]["credit_days"] == 58.5
    assert m["spot"]["credit_days"] == 146.6
    assert m["spot"]["credit_days"] >= 100  # the project's goal: 100 days of credit, on Spot
    assert m["on_demand"]["credit_days_left_on_24h"] == 22.4 and m["spot"]["credit_days_left_on_24h"] == 63.6


def test_ip_in_use_is_cheaper_on_spot(tables):
    on_demand = estimate(tables["prices"], "t4", False, "pd-balanced", 100, 18, 300)
    spot = estimate(tables["prices"], "t4", True, "pd-balanced", 100, 18, 300)
    assert on_demand["static_ip_per_hour_running"] == 0.005 and spot["static_ip_per_hour_running"] == 0.0025
    assert on_demand["running_per_hour"] - spot["running_per_hour"] == pytest.approx(0.36 + 0.0025, abs=1e-4)


def test_without_idle_stop_the_vm_counts_as_left_on(tables):
    m = money_lasts(tables["prices"], "t4", "pd-balanced", 100, 18, 300, 8, 0)
    assert m["running_hours_per_day"] == 24 and m["spot"]["credit_days"] == m["spot"]["credit_days_left_on_24h"] == 63.6


@pytest.mark.parametrize(("profile", "on_demand_days", "spot_days"), [
    # l4: running 0.706832 + IP + 0.014192; a100: 3.673388 + IP + 0.014192 (same arithmetic as above)
    ("l4", 300 / (8.5 * (0.706832 + 0.005 + 0.014192) + 15.5 * 0.024192), 300 / (8.5 * (0.2827 + 0.0025 + 0.014192) + 15.5 * 0.024192)),
    ("a100", 300 / (8.5 * (3.673388 + 0.005 + 0.014192) + 15.5 * 0.024192), 300 / (8.5 * (1.46936 + 0.0025 + 0.014192) + 15.5 * 0.024192)),
])
def test_other_profiles(tables, profile, on_demand_days, spot_days):
    m = money_lasts(tables["prices"], profile, "pd-balanced", 100, 18, 300, 8, 30)
    assert m["on_demand"]["credit_days"] == pytest.approx(on_demand_days, abs=0.06)
    assert m["spot"]["credit_days"] == pytest.approx(spot_days, abs=0.06)


def test_docs_quote_the_money_lasts_figures(tables):
    """docs/instances-and-costs.md shows what money_lasts computes (one source of figures)."""
    doc = (REPO / "docs" / "instances-and-costs.md").read_text()
    for name in ("t4", "l4", "a100"):
        m = money_lasts(tables["prices"], name, "pd-balanced", 100, 18, 300, 8, 30)
        line = next(ln for ln in doc.splitlines() if ln.startswith(f"| {name} | {m['on_demand']['running_per_hour']:.4f} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2:] == [f"{m['spot']['running_per_hour']:.4f}", f"{m['spot']['stopped_per_hour']:.4f}",
                             f"{m['on_demand']['credit_days']} days", f"{m['spot']['credit_days']} days",
                             f"{m['on_demand']['credit_days_left_on_24h']} days", f"{m['spot']['credit_days_left_on_24h']} days"], line
