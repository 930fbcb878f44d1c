"""gcp_settings: offline validation (bad input fails before any API call, naming the setting and accepted values) and the desired-state spec."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.module_utils.gcp_settings import IAP_SSH_RANGE, SettingsError, build_spec, check_bucket_name


def problems(settings: dict[str, Any], tables: dict[str, Any]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        build_spec(settings, tables["profiles"], tables["images"])
    return info.value.problems


def resource(spec: dict[str, Any], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(r for r in spec["resources"] if r["type"] == kind and (name is None or r["name"] == name))


def test_default_profile_is_t4_on_n1_with_one_gpu_and_terminate(settings, tables):
    spec = build_spec(settings, tables["profiles"], tables["images"])
    vm = resource(spec, "compute.instance")["fields"]
    assert vm["machine_type"] == "n1-standard-4"
    assert vm["guest_accelerators"] == [{"accelerator_type": "nvidia-tesla-t4", "accelerator_count": 1}]
    assert vm["scheduling"] == {"on_host_maintenance": "TERMINATE", "automatic_restart": True, "preemptible": False}
    assert vm["boot_disk"]["source_image"] == "projects/debian-cloud/global/images/family/debian-12"
    assert vm["metadata"]["enable-oslogin"] == "TRUE"
    assert vm["labels"]["deployment"] == "personaplex"
    assert "personaplex-voice" in vm["tags"]


def test_l4_and_a100_use_machine_types_with_builtin_gpus(settings, tables):
    for profile, machine, gpu in (("l4", "g2-standard-4", "nvidia-l4"), ("a100", "a2-highgpu-1g", "nvidia-tesla-a100")):
        spec = build_spec(dict(settings, profile=profile), tables["profiles"], tables["images"])
        vm = resource(spec, "compute.instance")["fields"]
        assert vm["machine_type"] == machine
        assert vm["guest_accelerators"] == []
        assert vm["accelerators_builtin"][0]["accelerator_type"] == gpu


def test_firewall_rules_are_limited_to_the_given_cidrs(settings, tables):
    spec = build_spec(settings, tables["profiles"], tables["images"])
    voice = resource(spec, "compute.firewall", "personaplex-allow-voice")["fields"]
    ssh = resource(spec, "compute.firewall", "personaplex-allow-ssh")["fields"]
    assert voice["source_ranges"] == ["198.51.100.0/24"]
    assert voice["allowed"] == [{"ip_protocol": "tcp", "ports": ["8998"]}]
    assert ssh["source_ranges"] == ["203.0.113.7/32"]
    assert ssh["allowed"] == [{"ip_protocol": "tcp", "ports": ["22"]}]
    assert voice["target_tags"] == ["personaplex-voice"]


def test_iap_adds_googles_range_to_ssh_only(settings, tables):
    spec = build_spec(dict(settings, ssh_access="iap", admin_cidrs=[]), tables["profiles"], tables["images"])
    assert resource(spec, "compute.firewall", "personaplex-allow-ssh")["fields"]["source_ranges"] == [IAP_SSH_RANGE]
    assert IAP_SSH_RANGE not in resource(spec, "compute.firewall", "personaplex-allow-voice")["fields"]["source_ranges"]
    assert "iap.googleapis.com" in spec["apis"]


def test_least_privilege_bindings(settings, tables):
    spec = build_spec(settings, tables["profiles"], tables["images"])
    bindings = [r["fields"] for r in spec["resources"] if r["type"] == "iam.binding"]
    member = "serviceAccount:personaplex-vm@my-voice-project.iam.gserviceaccount.com"
    assert {(b["resource_type"], b["role"]) for b in bindings} == {
        ("project", "roles/logging.logWriter"),
        ("project", "roles/monitoring.metricWriter"),
        ("bucket", "roles/storage.objectViewer"),  # read
        ("bucket", "roles/storage.objectCreator"),  # create; neither can delete or overwrite
    }
    assert all(b["members"] == [member] for b in bindings)
    bucket_binding = next(b for b in bindings if b["resource_type"] == "bucket")
    assert bucket_binding["resource"] == settings["bucket_name"]
    bucket = resource(spec, "storage.bucket")["fields"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["location"] == "US-CENTRAL1"


def test_unknown_profile_names_the_setting_and_choices(settings, tables):
    found = problems(dict(settings, profile="h100"), tables)
    assert any(p.startswith("gcp_profile: 'h100'") and "a100, l4, t4" in p for p in found)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.1/24", "did you mean 10.0.0.0/24"),
        ("300.1.2.3/32", "not a valid IPv4 CIDR"),
        ("203.0.113.0/33", "not a valid IPv4 CIDR"),
        ("my-laptop", "not a valid IPv4 CIDR"),
        ("2001:db8::/32", "IPv6"),
    ],
)
def test_malformed_cidr(settings, tables, value, expected):
    found = problems(dict(settings, client_cidrs=[value]), tables)
    assert any(p.startswith("gcp_client_cidrs:") and expected in p for p in found), found


def test_world_open_port_needs_explicit_setting_then_warns(settings, tables):
    found = problems(dict(settings, client_cidrs=["0.0.0.0/0"]), tables)
    assert any("gcp_allow_world_access: true" in p for p in found)
    spec = build_spec(dict(settings, client_cidrs=["0.0.0.0/0"], allow_world_access=True), tables["profiles"], tables["images"])
    assert resource(spec, "compute.firewall", "personaplex-allow-voice")["fields"]["source_ranges"] == ["0.0.0.0/0"]
    assert any("whole Internet" in w for w in spec["warnings"])


def test_missing_cidrs_are_reported(settings, tables):
    found = problems(dict(settings, admin_cidrs=[], client_cidrs=[]), tables)
    assert any(p.startswith("gcp_admin_cidrs:") for p in found)
    assert any(p.startswith("gcp_client_cidrs:") for p in found)


@pytest.mark.parametrize(
    "name",
    ["ab", "My-Bucket", "weights.example.com", "goog-weights", "my-google-weights", "my-g00gle-weights",
     "-weights", "weights-", "192.168.5.4", "a" * 64, "weights bucket"],
)
def test_bad_bucket_names(settings, tables, name):
    found = problems(dict(settings, bucket_name=name), tables)
    assert any(p.startswith("gcp_bucket_name:") and "Accepted: 3-63 characters" in p for p in found), found


@pytest.mark.parametrize("name", ["abc", "my-voice-project-personaplex-weights", "w_1-2"])
def test_good_bucket_names(name):
    assert check_bucket_name(name) == []


def test_zone_without_the_gpu(settings, tables):
    # europe-west1-b has T4s but no A100 (A100 zones in Europe: europe-west4-a/b).
    found = problems(dict(settings, profile="a100", zone="europe-west1-b"), tables)
    msg = next(p for p in found if p.startswith("gcp_zone:"))
    assert "nvidia-tesla-a100" in msg and "europe-west4-a" in msg and "gcp_accept_unlisted_zone" in msg


def test_unlisted_zone_can_be_accepted_with_a_warning(settings, tables):
    spec = build_spec(dict(settings, profile="a100", zone="europe-west1-b", accept_unlisted_zone=True), tables["profiles"], tables["images"])
    assert any("zone table" in w for w in spec["warnings"])


def test_zone_region_and_disk_errors(settings, tables):
    found = problems(dict(settings, zone="us-central1", region="europe-west4", disk_size_gb=20, disk_type="pd-standard", profile="l4"), tables)
    assert any(p.startswith("gcp_zone:") for p in found)
    found = problems(dict(settings, region="europe-west4"), tables)
    assert any(p.startswith("gcp_region:") and "'us-central1'" in p for p in found)
    found = problems(dict(settings, disk_size_gb=20), tables)
    assert any(p.startswith("gcp_disk_size_gb:") and "at least 64" in p for p in found)
    found = problems(dict(settings, profile="l4", disk_type="pd-standard"), tables)
    assert any(p.startswith("gcp_disk_type:") and "pd-balanced, pd-ssd" in p for p in found)


def test_dlvm_image_and_custom_image(settings, tables):
    spec = build_spec(dict(settings, image="dlvm"), tables["profiles"], tables["images"])
    assert resource(spec, "compute.instance")["fields"]["boot_disk"]["source_image"].startswith("projects/deeplearning-platform-release/")
    found = problems(dict(settings, image="custom"), tables)
    assert any(p.startswith("gcp_image:") and "gcp_image_project" in p for p in found)
    found = problems(dict(settings, image="windows"), tables)
    assert any(p.startswith("gcp_image:") and "debian-12" in p for p in found)


def test_reserved_labels_are_refused(settings, tables):
    found = problems(dict(settings, labels={"deployment": "other", "owner": "alice"}), tables)
    assert any(p.startswith("gcp_labels: 'deployment'") for p in found)
    assert not any("'owner'" in p for p in found)


def test_every_problem_is_reported_at_once(settings, tables):
    found = problems(dict(settings, project="", profile="x", client_cidrs=["bad"], bucket_name="Bad"), tables)
    assert {p.split(":")[0] for p in found} >= {"gcp_project", "gcp_profile", "gcp_client_cidrs", "gcp_bucket_name"}


def test_spot_sets_preemptible_and_no_automatic_restart(settings, tables):
    spec = build_spec(dict(settings, spot=True), tables["profiles"], tables["images"])
    sched = resource(spec, "compute.instance")["fields"]["scheduling"]
    assert sched == {"on_host_maintenance": "TERMINATE", "automatic_restart": False, "preemptible": True}


# --- dedicated network, names that every API accepts, CIDRs --------------------------
def test_dedicated_custom_mode_network_and_subnet_by_default(settings, tables):
    spec = build_spec(settings, tables["profiles"], tables["images"])
    net = resource(spec, "compute.network", "personaplex-net")["fields"]
    subnet = resource(spec, "compute.subnetwork", "personaplex-subnet")["fields"]
    assert net["auto_create_subnetworks"] is False
    assert subnet == dict(subnet, region="us-central1", network="global/networks/personaplex-net", ip_cidr_range="10.64.0.0/24")
    assert spec["marker"] in net["description"] and spec["marker"] in subnet["description"]
    for rule in ("personaplex-allow-ssh", "personaplex-allow-voice"):
        assert resource(spec, "compute.firewall", rule)["fields"]["network"] == "global/networks/personaplex-net"
    vm = resource(spec, "compute.instance")["fields"]
    assert (vm["network"], vm["subnetwork"]) == ("global/networks/personaplex-net", "regions/us-central1/subnetworks/personaplex-subnet")
    kinds = [r["type"] for r in spec["resources"]]
    assert kinds.index("compute.network") < kinds.index("compute.subnetwork") < kinds.index("compute.firewall")


def test_default_network_can_be_chosen_and_is_never_created(settings, tables):
    spec = build_spec(dict(settings, network_name="default"), tables["profiles"], tables["images"])
    assert not [r for r in spec["resources"] if r["type"] in ("compute.network", "compute.subnetwork")]
    assert resource(spec, "compute.instance")["fields"]["network"] == "global/networks/default"
    assert spec["network"]["dedicated"] is False


@pytest.mark.parametrize(("extra", "expected"), [
    ({"deployment_name": "pp"}, "gives the service account id 'pp-vm' (5 characters); IAM accepts 6-30"),
    ({"deployment_name": "abc"}, None),
    ({"network_name": "My_Net"}, "gcp_network_name: 'My_Net' is invalid"),
    ({"network_name": "n" * 64}, "gcp_network_name:"),
    ({"subnet_name": "-sub"}, "gcp_subnet_name: '-sub' is invalid"),
    ({"subnet_cidr": "10.0.0.1/24"}, "gcp_subnet_cidr: '10.0.0.1/24' is not a valid IPv4 CIDR"),
    ({"subnet_cidr": "8.8.8.0/24"}, "gcp_subnet_cidr: '8.8.8.0/24' is not a private range"),
    ({"subnet_cidr": "10.0.0.0/30"}, "gcp_subnet_cidr: '10.0.0.0/30' is not a private range"),
    ({"bucket_roles": "roles/storage.objectUser"}, "gcp_bucket_roles:"),
])
def test_derived_names_and_network_settings_are_checked_offline(settings, tables, extra, expected):
    if expected is None:
        build_spec(dict(settings, **extra), tables["profiles"], tables["images"])
        return
    assert any(expected in p for p in problems(dict(settings, **extra), tables)), problems(dict(settings, **extra), tables)


def test_exact_marker_match_never_takes_a_longer_deployment_name():
    from ansible.module_utils.gcp_settings import marker_matches

    ours = "SSH to the PersonaPlex VM. managed-by=personaplex-ansible deployment=personaplex"
    assert marker_matches(ours, "personaplex")
    assert not marker_matches(ours + "-dev", "personaplex")
    assert marker_matches(ours + "-dev", "personaplex-dev")
    assert not marker_matches("deployment=personaplex", "personaplex")  # no managed-by: not ours
