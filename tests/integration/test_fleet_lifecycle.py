"""Fleet mode end to end against the stand-in of Google's APIs (tests/standins/fake_gcp.py + fake_gcp_fleet.py).

image -> fleet -> rerun (no write) -> changed setting (new template, rolling update, old template
deleted) -> teardown by exact identity (another deployment's look-alike survives). The image
step runs without configure.yml's roles (gcp_fleet_image_configure=false: no SSH to a fake VM);
the generalise tasks are tested on their own in test_fleet_image.py.
"""

from __future__ import annotations

import base64

from project import writes

PROJECT = "my-voice-project"
G = f"projects/{PROJECT}/global"
R = f"projects/{PROJECT}/regions/us-central1"
NO_CONFIGURE = {"gcp_fleet_image_configure": False}


def kinds(fake, what):
    return sorted(k.rsplit("/", 1)[-1] for k in fake.compute if f"/{what}/" in k and "/operations/" not in k)


def test_image_fleet_rerun_change_teardown(cloud, tmp_path):
    fake, play = cloud
    project_own = set(fake.compute)  # a new project's default network and its rules: never touched
    proc, calls = play("image.yml", **NO_CONFIGURE)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    images = kinds(fake, "images")
    assert len(images) == 1
    image = fake.compute[f"{G}/images/{images[0]}"]
    assert image["family"] == "personaplex-personaplex"
    assert image["labels"]["app-version"] == "0-1-0" and image["labels"]["model-revision"] == "main"
    assert image["labels"]["deployment"] == "personaplex"
    assert image["sourceDisk"].endswith("/zones/us-central1-a/disks/personaplex-image-builder")
    assert kinds(fake, "instances") == []  # the builder is deleted
    verbs = [c[1].rsplit("/", 1)[-1] for c in writes(calls) if "/instances/personaplex-image-builder" in c[1]]
    assert verbs == ["stop", "personaplex-image-builder"]  # stopped before the image, then deleted
    known = (tmp_path / ".ssh" / "personaplex_known_hosts").read_text()  # the builder's host key, pinned
    assert "203.0.113.50 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTests" in known

    proc, calls = play("image.yml", **NO_CONFIGURE)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert writes(calls) == [] and kinds(fake, "images") == images  # same labels: no new image

    proc, calls = play("fleet.yml")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    names = {k.split("/", 2)[-1] for k in fake.compute if "/operations/" not in k}
    template = next(n for n in names if n.startswith("global/instanceTemplates/"))
    tpl = fake.compute[f"projects/{PROJECT}/{template}"]["properties"]
    assert tpl["networkInterfaces"][0].get("accessConfigs") is None  # no external IP
    assert tpl["disks"][0]["initializeParams"]["sourceImage"] == f"projects/{PROJECT}/global/images/{images[0]}"
    assert tpl["guestAccelerators"] == [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]
    assert tpl["scheduling"]["onHostMaintenance"] == "TERMINATE"
    meta = {i["key"]: i["value"] for i in tpl["metadata"]["items"]}
    assert meta["startup-script"].startswith("#!/usr/bin/python3")
    assert meta["personaplex-secret"] == f"projects/{PROJECT}/secrets/personaplex-access-token"
    fw = fake.compute[f"{G}/firewalls/personaplex-fleet-allow-health"]
    assert sorted(fw["sourceRanges"]) == ["130.211.0.0/22", "35.191.0.0/16"] and fw["targetTags"] == ["personaplex-fleet"]
    mig = fake.compute[f"{R}/instanceGroupManagers/personaplex-fleet"]
    assert [z["zone"].rsplit("/", 1)[-1] for z in mig["distributionPolicy"]["zones"]] == ["us-central1-a", "us-central1-b",
                                                                                        "us-central1-c", "us-central1-f"]
    assert mig["autoHealingPolicies"][0]["healthCheck"].endswith("/global/healthChecks/personaplex-fleet-hc")
    hc = fake.compute[f"{G}/healthChecks/personaplex-fleet-hc"]
    assert hc["httpsHealthCheck"] == {"port": 8998, "requestPath": "/readyz"}
    scaler = fake.compute[f"{R}/autoscalers/personaplex-fleet-as"]["autoscalingPolicy"]
    assert (scaler["minNumReplicas"], scaler["maxNumReplicas"]) == (1, 3)
    assert scaler["customMetricUtilizations"][0] == {"metric": "prometheus.googleapis.com/personaplex_sessions_active/gauge",
                                                     "utilizationTarget": 1.2, "utilizationTargetType": "GAUGE"}
    be = fake.compute[f"{G}/backendServices/personaplex-fleet-be"]
    assert be["timeoutSec"] == 3600 and be["protocol"] == "HTTPS" and be["localityLbPolicy"] == "LEAST_REQUEST"
    assert be["backends"][0]["balancingMode"] == "UTILIZATION"
    assert be["securityPolicy"].endswith("/global/securityPolicies/personaplex-fleet-armor")
    armor = fake.compute[f"{G}/securityPolicies/personaplex-fleet-armor"]["rules"]
    assert [(r["priority"], r["action"], r["match"]["config"]["srcIpRanges"]) for r in armor] == [
        (1000, "allow", ["198.51.100.0/24"]), (2147483647, "deny(403)", ["*"])]
    cert = fake.compute[f"{G}/sslCertificates/personaplex-fleet-cert"]
    assert cert["type"] == "SELF_MANAGED" and "privateKey" not in cert
    assert fake.compute[f"{G}/forwardingRules/personaplex-fleet-fr"]["portRange"] == "443-443"
    secret = f"projects/{PROJECT}/secrets/personaplex-access-token"
    token = (tmp_path / ".config/personaplex/personaplex/access-token").read_text()
    assert (tmp_path / ".config/personaplex/personaplex/access-token").stat().st_mode & 0o777 == 0o600
    assert base64.b64decode(fake.fleet.secret_versions[secret][-1]["data"]).decode() == token
    assert fake.fleet.secret_policies[secret]["bindings"] == [
        {"role": "roles/secretmanager.secretAccessor", "members": [f"serviceAccount:personaplex-fleet@{PROJECT}.iam.gserviceaccount.com"]}]
    assert token not in proc.stdout and "PRIVATE KEY" not in proc.stdout

    proc, calls = play("fleet.yml")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert writes(calls) == [], writes(calls)
    assert "changed=0" in proc.stdout.rsplit("PLAY RECAP", 1)[-1]

    # Stop the fleet (autoscaler OFF, 0 instances); the next run (running) turns it back ON.
    proc, calls = play("fleet.yml", gcp_fleet_power="stopped")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert fake.compute[f"{R}/autoscalers/personaplex-fleet-as"]["autoscalingPolicy"]["mode"] == "OFF"
    assert fake.compute[f"{R}/instanceGroupManagers/personaplex-fleet"]["targetSize"] == 0
    assert sorted(c[0] for c in writes(calls)) == ["PATCH", "PATCH"]  # nothing else touched

    # A new image and changed settings: a new template, the group rolls to it, the old template goes.
    proc, _ = play("image.yml", gcp_fleet_image_recipe=2, **NO_CONFIGURE)
    assert proc.returncode == 0, proc.stdout[-3000:]
    newer = next(i for i in kinds(fake, "images") if i not in images)
    proc, calls = play("fleet.yml", gcp_fleet_disk_size_gb=120, gcp_fleet_max_instances=4, gcp_client_cidrs=["198.51.100.0/24", "192.0.2.0/24"])
    assert proc.returncode == 0, proc.stdout[-4000:]
    new_templates = kinds(fake, "instanceTemplates")
    assert len(new_templates) == 1 and f"global/instanceTemplates/{new_templates[0]}" != template
    new_tpl = fake.compute[f"{G}/instanceTemplates/{new_templates[0]}"]["properties"]
    assert new_tpl["disks"][0]["initializeParams"]["sourceImage"] == f"projects/{PROJECT}/global/images/{newer}"
    assert fake.fleet.rollouts == [("personaplex-fleet", new_templates[0])]
    assert fake.compute[f"{R}/autoscalers/personaplex-fleet-as"]["autoscalingPolicy"]["maxNumReplicas"] == 4
    assert fake.compute[f"{R}/autoscalers/personaplex-fleet-as"]["autoscalingPolicy"]["mode"] == "ON"
    armor = fake.compute[f"{G}/securityPolicies/personaplex-fleet-armor"]["rules"]
    assert min(r["match"]["config"]["srcIpRanges"] for r in armor) == ["*"]
    assert ["198.51.100.0/24", "192.0.2.0/24"] in [r["match"]["config"]["srcIpRanges"] for r in armor]

    # Another deployment's look-alike (deployment=personaplex-2) must survive our teardown.
    other = dict(fake.compute[f"{G}/healthChecks/personaplex-fleet-hc"], name="personaplex-2-fleet-hc",
                 selfLink=f"https://www.googleapis.com/compute/v1/{G}/healthChecks/personaplex-2-fleet-hc",
                 description="managed-by=personaplex-ansible deployment=personaplex-2")
    fake.compute[f"{G}/healthChecks/personaplex-2-fleet-hc"] = other
    proc, _ = play("teardown.yml", gcp_teardown_confirm="personaplex")
    assert proc.returncode == 0, proc.stdout[-4000:]
    left = sorted(k.split("/", 2)[-1] for k in fake.compute if "/operations/" not in k and k not in project_own)
    assert left == ["global/healthChecks/personaplex-2-fleet-hc", *sorted(f"global/images/{i}" for i in (images[0], newer))], left
    assert fake.fleet.secrets == {}
    assert f"personaplex-fleet@{PROJECT}.iam.gserviceaccount.com" not in fake.service_accounts

    proc, _ = play("teardown.yml", gcp_teardown_confirm="personaplex", gcp_fleet_teardown_images=True)
    assert proc.returncode == 0 and kinds(fake, "images") == []
