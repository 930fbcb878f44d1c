"""Fleet mode in make plan (JSON), make stop / make start and teardown, against the stand-in of
Google's APIs (fake_gcp.py + fake_gcp_fleet.py), with min_instances 0 (scale to zero).

plan.yml writes the fleet's resources and cost into the JSON plan; fleet.yml creates the
starting page (bucket, object, public read) and the URL map's custom error response; power.yml
stops the fleet (autoscaler OFF, then 0 instances) and starts it (autoscaler ON) without a
single-VM deployment, writing nothing else; teardown removes the page's bucket, never another
deployment's.
"""

from __future__ import annotations

import base64
import hashlib
import json

from project import run_playbook, writes

PROJECT = "my-voice-project"
G = f"projects/{PROJECT}/global"
R = f"projects/{PROJECT}/regions/us-central1"
BUCKET = f"{PROJECT}-personaplex-fleet-status"
ZERO = {"gcp_fleet_min_instances": 0, "gcp_fleet_max_instances": 2}


def test_plan_json_has_the_fleet(cloud, tmp_path):  # noqa: F811
    fake, play = cloud
    out = tmp_path / "plan.json"
    proc, calls = play("plan.yml", gcp_plan_read_state="never", gcp_plan_output=str(out), **ZERO)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert writes(calls) == []
    plan = json.loads(out.read_text())
    assert plan["deployment"] == "personaplex" and plan["cost"]["running_per_hour"] > 0  # the single-VM part is still there
    fleet = plan["fleet"]
    assert (fleet["min_instances"], fleet["max_instances"], fleet["sessions_at_max"]) == (0, 2, 4)
    kinds = [r["kind"] for r in fleet["resources"]]
    assert kinds[0] == "firewall" and kinds[-1] == "forwardingRule" and "backendBucket" in kinds
    assert all(set(r) == {"kind", "name", "collection"} for r in fleet["resources"])  # no bodies, no keys
    cost = fleet["cost"]
    assert cost["at_min"]["instances"] == 0 and cost["at_max"]["instances"] == 2
    assert cost["at_min"]["per_month_24h"] == cost["fixed_per_month"]  # 0 instances: fixed costs only
    assert cost["at_max"]["per_hour"] - cost["at_min"]["per_hour"] > 2 * 0.5  # two T4 instances
    assert fleet["status_page"] == {"bucket": BUCKET, "object": "fleet-starting.html", "location": "US-CENTRAL1",
                                    "retry_after_s": 600, "labels": fleet["status_page"]["labels"]}
    assert "PRIVATE KEY" not in out.read_text() and "startup-script" not in out.read_text()
    assert "the load balancer answers HTTP 503, Retry-After 600" in " ".join(proc.stdout.split())


def test_scale_to_zero_page_power_and_teardown(cloud):  # noqa: F811
    fake, play = cloud
    proc, _ = play("image.yml", gcp_fleet_image_configure=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    proc, calls = play("fleet.yml", **ZERO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    # The starting page: a labelled bucket, the page, readable by everyone (a backend bucket's content).
    bucket = fake.buckets[BUCKET]
    assert bucket["labels"]["deployment"] == "personaplex" and bucket["location"] == "US-CENTRAL1"
    assert bucket["iamConfiguration"]["uniformBucketLevelAccess"] == {"enabled": True}
    page = fake.fleet.objects[(BUCKET, "fleet-starting.html")]
    assert page["contentType"] == "text/html; charset=utf-8"
    assert b"retry in 10 minutes" in page["data"]
    assert page["md5Hash"] == base64.b64encode(hashlib.md5(page["data"]).digest()).decode()  # noqa: S324
    assert {"role": "roles/storage.objectViewer", "members": ["allUsers"]} in fake.bucket_policies[BUCKET]["bindings"]
    backend = fake.compute[f"{G}/backendBuckets/personaplex-fleet-status"]
    assert backend["bucketName"] == BUCKET and "Retry-After: 600" in backend["customResponseHeaders"]
    policy = fake.compute[f"{G}/urlMaps/personaplex-fleet-lb"]["defaultCustomErrorResponsePolicy"]
    assert policy["errorService"].endswith("/global/backendBuckets/personaplex-fleet-status")
    scaler = fake.compute[f"{R}/autoscalers/personaplex-fleet-as"]["autoscalingPolicy"]
    assert scaler["minNumReplicas"] == 0 and scaler["mode"] == "ON"

    proc, calls = play("fleet.yml", **ZERO)
    assert proc.returncode == 0 and writes(calls) == [], writes(calls)  # same page: not uploaded again

    # A longer boot: the page and the header say so (a new upload, a patched backend bucket).
    proc, calls = play("fleet.yml", gcp_fleet_boot_s=900, **ZERO)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert b"retry in 15 minutes" in fake.fleet.objects[(BUCKET, "fleet-starting.html")]["data"]
    assert "Retry-After: 900" in fake.compute[f"{G}/backendBuckets/personaplex-fleet-status"]["customResponseHeaders"]

    # A caller came: the autoscaler grew the group to one instance (what Google's autoscaler does).
    fake.compute[f"{R}/instanceGroupManagers/personaplex-fleet"]["targetSize"] = 1
    # make stop: no single VM here, so only the fleet: autoscaler OFF first, then 0 instances.
    proc, calls = play("power.yml", gcp_power_state="stopped", gcp_fleet_boot_s=900, **ZERO)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stdout[-3000:]
    # regionAutoscalers.patch names the autoscaler in ?autoscaler=, so the path ends in the collection.
    assert [(c[0], c[1].split("/")[-1]) for c in writes(calls)] == [("PATCH", "autoscalers"), ("PATCH", "personaplex-fleet")], writes(calls)
    assert fake.compute[f"{R}/autoscalers/personaplex-fleet-as"]["autoscalingPolicy"]["mode"] == "OFF"
    assert fake.compute[f"{R}/instanceGroupManagers/personaplex-fleet"]["targetSize"] == 0
    assert "is stopped: autoscaler OFF, 0 instances" in out
    assert not any("/instances/personaplex-vm" in c[1] and c[0] != "GET" for c in calls)

    proc, calls = play("power.yml", gcp_power_state="stopped", gcp_fleet_boot_s=900, **ZERO)
    assert proc.returncode == 0 and writes(calls) == []  # already stopped

    # make start: the autoscaler ON again; with min 0 the first caller starts an instance.
    proc, calls = play("power.yml", gcp_power_state="running", gcp_fleet_boot_s=900, **ZERO)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [c[0] for c in writes(calls)] == ["PATCH"]
    assert fake.compute[f"{R}/autoscalers/personaplex-fleet-as"]["autoscalingPolicy"]["mode"] == "ON"
    assert "the first caller starts an instance, ready in about 15 min" in out

    # Another deployment's look-alike bucket must survive our teardown.
    fake.handle("POST", "storage.googleapis.com", "/storage/v1/b", {"project": [PROJECT]},
                {"name": f"{PROJECT}-personaplex-2-fleet-status", "labels": {"app": "personaplex", "deployment": "personaplex-2"}})
    proc, _ = play("teardown.yml", gcp_teardown_confirm="personaplex")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert BUCKET not in fake.buckets and (BUCKET, "fleet-starting.html") not in fake.fleet.objects
    assert f"{PROJECT}-personaplex-2-fleet-status" in fake.buckets
    assert not [k for k in fake.compute if "/backendBuckets/" in k or "/urlMaps/" in k]


def test_power_without_fleet_or_vm_says_deploy_first(cloud):  # noqa: F811
    fake, play = cloud
    proc, calls = play("power.yml", gcp_power_state="stopped")
    assert proc.returncode != 0
    assert "VM personaplex-vm was not found" in " ".join(proc.stdout.split())
    assert writes(calls) == []


def test_real_cloud_scale_to_zero_check_parses(inventory, tmp_path):
    proc = run_playbook("../tests/integration/real_cloud/test_real_cloud_fleet_zero.yml", inventory, tmp_path, "--syntax-check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
