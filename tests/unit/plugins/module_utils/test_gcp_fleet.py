"""gcp_fleet: the fleet plan (resources, their order, scaling, certificates, Cloud Armor), its
validation, its cost, and docs/fleet.md quoting the same cost. Pure Python, no HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.module_utils.gcp_fleet import FleetSettingsError, build_fleet, fleet_cost
from fleet_examples import PLAN, by_kind, fleet_settings, profile
from project import REPO, role_vars

# --- the fleet plan -------------------------------------------------------------------------
def test_plan_orders_resources_and_sizes_scaling() -> None:
    fleet = build_fleet(PLAN, profile(), fleet_settings())
    assert [r["kind"] for r in fleet["resources"]] == [
        "firewall", "healthCheck", "instanceTemplate", "instanceGroupManager", "autoscaler", "securityPolicy",
        "backendService", "backendBucket", "urlMap", "sslCertificate", "targetHttpsProxy", "globalAddress", "forwardingRule"]
    assert fleet["zones"] == ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
    mig = by_kind(fleet, "instanceGroupManager")["body"]
    assert mig["updatePolicy"]["maxSurge"] == {"fixed": 4} and mig["updatePolicy"]["maxUnavailable"] == {"fixed": 0}
    metric = by_kind(fleet, "autoscaler")["body"]["autoscalingPolicy"]["customMetricUtilizations"]
    assert metric == [{"metric": "prometheus.googleapis.com/personaplex_sessions_active/gauge", "utilizationTarget": 1.2,
                       "utilizationTargetType": "GAUGE"}]
    assert fleet["sessions_at_max"] == 6
    # The template's name follows its content: same settings, same name; a change, a new one.
    again = build_fleet(PLAN, profile(), fleet_settings())
    bigger = build_fleet(PLAN, profile(), fleet_settings(disk_size_gb=200))
    assert again["names"]["template"] == fleet["names"]["template"] != bigger["names"]["template"]


def test_scale_to_zero_adds_a_per_group_metric_and_spot_sets_the_provisioning_model() -> None:
    fleet = build_fleet(dict(PLAN, spot=True), profile("l4"), fleet_settings(min_instances=0))
    metrics = by_kind(fleet, "autoscaler")["body"]["autoscalingPolicy"]["customMetricUtilizations"]
    assert [m.get("singleInstanceAssignment") for m in metrics] == [None, 2.0]
    props = by_kind(fleet, "instanceTemplate")["body"]["properties"]
    assert props["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False,
                                   "provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"}
    assert "guestAccelerators" not in props  # the L4 comes with g2-standard-4


def test_managed_certificate_with_a_domain_and_cloud_armor_chunks() -> None:
    cidrs = [f"203.0.113.{i}/32" for i in range(12)]
    fleet = build_fleet(PLAN, profile(), fleet_settings(domain="voice.example.org", certificate_pem="", client_cidrs=cidrs))
    assert by_kind(fleet, "sslCertificate")["body"]["managed"] == {"domains": ["voice.example.org"]}
    rules = by_kind(fleet, "securityPolicy")["body"]["rules"]
    assert [len(r["match"]["config"]["srcIpRanges"]) for r in rules] == [10, 2, 1]
    assert rules[-1]["priority"] == 2147483647 and rules[-1]["action"] == "deny(403)"


@pytest.mark.parametrize(("over", "message"), [
    ({"min_instances": 4}, "gcp_fleet_min_instances (4) is above gcp_fleet_max_instances (3)"),
    ({"max_instances": 0}, "gcp_fleet_max_instances: 0 is not accepted"),
    ({"target_utilization": 1.0}, "gcp_fleet_target_utilization: 1.0 is not accepted"),
    ({"zones": ["europe-west4-a"]}, "gcp_fleet_zones: europe-west4-a not in region us-central1"),
    ({"domain": "Not A Domain"}, "gcp_fleet_domain: 'Not A Domain' is not a domain name"),
    ({"certificate_pem": ""}, "a self-managed certificate is needed"),
    ({"sessions_per_instance": "two"}, "gcp_fleet_sessions_per_instance: 'two' is not accepted"),
])
def test_bad_fleet_settings_are_named_with_what_is_accepted(over: dict[str, Any], message: str) -> None:
    with pytest.raises(FleetSettingsError, match="Accepted|needed") as err:
        build_fleet(PLAN, profile(), fleet_settings(**over))
    assert message in str(err.value)


def test_cost_at_min_and_max() -> None:
    prices = role_vars("prices.yml")["gcp_infra_prices"]
    fleet_prices = role_vars_fleet()["gcp_fleet_prices"]
    cost = fleet_cost(prices, fleet_prices, "t4", False, "pd-balanced", 100, 1, 3, 40)
    per_instance = 0.189999 + 0.35 + 0.100 * 100 / 730
    assert cost["per_instance_per_hour"] == round(per_instance, 4)
    assert cost["at_max"]["per_hour"] - cost["at_min"]["per_hour"] == pytest.approx(2 * per_instance, abs=1e-3)
    assert cost["fixed_per_month"] == round(0.025 * 730 + 5 + 2 + 0.05 * 40, 2)


def role_vars_fleet() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / "roles" / "gcp_fleet" / "vars" / "main.yml").read_text())


def test_docs_quote_the_cost_the_plan_computes() -> None:
    """docs/fleet.md's table must follow the price tables (one source of prices)."""
    prices = role_vars("prices.yml")["gcp_infra_prices"]
    fleet_prices = role_vars_fleet()["gcp_fleet_prices"]
    doc = (REPO / "docs" / "fleet.md").read_text()
    for name, spot in (("t4", False), ("t4", True), ("l4", False), ("l4", True), ("a100", False)):
        cost = fleet_cost(prices, fleet_prices, name, spot, "pd-balanced", 100, 1, 3, fleet_prices["image_gb"])
        row = (f"| {name} | {'spot' if spot else 'on-demand'} | {cost['per_instance_per_hour']:.3f} | "
               f"{cost['at_min']['per_month_24h']:.0f} | {cost['at_max']['per_month_24h']:.0f} |")
        assert row in doc, row
    assert f"about **{fleet_cost(prices, fleet_prices, 't4', False, 'pd-balanced', 100, 0, 3, 40)['fixed_per_month']:.0f} USD/month**" in doc


def test_power_stopped_turns_the_autoscaler_off_and_sizes_the_group_to_zero() -> None:
    running = build_fleet(PLAN, profile(), fleet_settings())
    stopped = build_fleet(PLAN, profile(), fleet_settings(power="stopped"))
    assert by_kind(running, "autoscaler")["body"]["autoscalingPolicy"]["mode"] == "ON"
    assert by_kind(running, "instanceGroupManager")["ignore"] == ["targetSize"]  # the autoscaler owns the size
    assert by_kind(stopped, "autoscaler")["body"]["autoscalingPolicy"]["mode"] == "OFF"
    mig = by_kind(stopped, "instanceGroupManager")
    assert mig["body"]["targetSize"] == 0 and mig["ignore"] == []
    assert stopped["names"]["template"] == running["names"]["template"]  # no rolling update for a stop
    with pytest.raises(FleetSettingsError, match="gcp_fleet_power: 'paused' is not accepted. Accepted: running, stopped"):
        build_fleet(PLAN, profile(), fleet_settings(power="paused"))
