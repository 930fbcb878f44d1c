# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Cost estimate from the dated price table (roles/gcp_infra/vars/prices.yml). Pure Python."""

from __future__ import annotations

from typing import Any

HOURS_PER_MONTH = 730.0
DAYS_PER_MONTH = HOURS_PER_MONTH / 24.0


def _r(value: float, digits: int = 4) -> float:
    return round(value + 0.0, digits)


def profile_hourly(prices: dict[str, Any], profile_name: str) -> dict[str, float]:
    """On-demand and spot USD per hour for machine + GPU of one profile."""
    row = prices["profiles"][profile_name]
    on_demand = float(row["machine_on_demand"]) + float(row["gpu_on_demand"])
    spot = float(row["machine_spot"]) + float(row["gpu_spot"])
    return {"on_demand": _r(on_demand), "spot": _r(spot)}


def ip_in_use_per_hour(prices: dict[str, Any], spot: bool) -> float:
    """An external IP in use by a Spot (or preemptible) VM is billed at a lower rate than by a standard VM."""
    if spot and "ip_in_use_spot_per_hour" in prices:
        return float(prices["ip_in_use_spot_per_hour"])
    return float(prices["ip_in_use_per_hour"])


def running_hours_per_day(hours_per_day: float, idle_stop_minutes: float) -> float:
    """Hours billed as running per day of use: the talking time plus one idle-stop tail (capped at 24).

    Without idle stop (0) the VM stays on until `make stop`: counted as 24 h, the case of forgetting it.
    """
    if idle_stop_minutes <= 0:
        return 24.0
    return min(24.0, hours_per_day + idle_stop_minutes / 60.0)


def money_lasts(prices: dict[str, Any], profile_name: str, disk_type: str, disk_size_gb: int, bucket_gb: float,
                credits_usd: float, hours_per_day: float, idle_stop_minutes: float) -> dict[str, Any]:
    """On-demand and Spot side by side for one profile: hourly cost running and stopped, cost per day,
    and how many days `credits_usd` lasts at `hours_per_day` of use with idle stop (and left on 24 h)."""
    always_hourly = (float(prices["disk_per_gb_month"][disk_type]) * disk_size_gb
                     + float(prices["storage_standard_per_gb_month"]) * bucket_gb) / HOURS_PER_MONTH
    stopped = float(prices["ip_reserved_idle_per_hour"]) + always_hourly
    billed_hours = running_hours_per_day(hours_per_day, idle_stop_minutes)
    hourly = profile_hourly(prices, profile_name)
    result: dict[str, Any] = {
        "profile": profile_name,
        "credits_usd": credits_usd,
        "hours_per_day": hours_per_day,
        "idle_stop_minutes": idle_stop_minutes,
        "running_hours_per_day": _r(billed_hours, 2),
    }
    for pricing, spot in (("on_demand", False), ("spot", True)):
        running = hourly[pricing] + ip_in_use_per_hour(prices, spot) + always_hourly
        per_day = billed_hours * running + (24.0 - billed_hours) * stopped
        per_day_24 = 24.0 * running
        result[pricing] = {
            "vm_and_gpu_per_hour": hourly[pricing],
            "running_per_hour": _r(running),
            "stopped_per_hour": _r(stopped),
            "per_day": _r(per_day, 2),
            "per_month": _r(per_day * DAYS_PER_MONTH, 2),
            "credit_days": _r(credits_usd / per_day, 1),
            "credit_days_left_on_24h": _r(credits_usd / per_day_24, 1),
        }
    return result


def estimate(prices: dict[str, Any], profile_name: str, spot: bool, disk_type: str, disk_size_gb: int,
             bucket_gb: float, credits_usd: float, hours_per_day_low: float = 8.0,
             idle_stop_minutes: float = 30.0) -> dict[str, Any]:
    """Hourly and monthly estimate for the chosen settings, plus every profile for comparison."""
    disk_month = float(prices["disk_per_gb_month"][disk_type]) * disk_size_gb
    bucket_month = float(prices["storage_standard_per_gb_month"]) * bucket_gb
    ip_running = ip_in_use_per_hour(prices, spot)
    ip_stopped = float(prices["ip_reserved_idle_per_hour"])
    always_hourly = (disk_month + bucket_month) / HOURS_PER_MONTH

    chosen = profile_hourly(prices, profile_name)
    vm_hourly = chosen["spot" if spot else "on_demand"]
    running_hourly = vm_hourly + ip_running + always_hourly
    stopped_hourly = ip_stopped + always_hourly

    def day_cost(hours_running: float) -> float:
        return hours_running * running_hourly + (24.0 - hours_running) * stopped_hourly

    per_day_24 = day_cost(24.0)
    per_day_low = day_cost(hours_per_day_low)
    comparison = {}
    for name in sorted(prices["profiles"]):
        hourly = profile_hourly(prices, name)
        comparison[name] = {
            "machine_type": prices["profiles"][name]["machine_type"],
            "gpu": prices["profiles"][name]["gpu"],
            "on_demand_per_hour": hourly["on_demand"],
            "spot_per_hour": hourly["spot"],
            "on_demand_per_month_24h": _r(hourly["on_demand"] * HOURS_PER_MONTH, 2),
            "spot_per_month_24h": _r(hourly["spot"] * HOURS_PER_MONTH, 2),
        }
        lasts = money_lasts(prices, name, disk_type, disk_size_gb, bucket_gb, credits_usd, hours_per_day_low, idle_stop_minutes)
        comparison[name]["on_demand_credit_days"] = lasts["on_demand"]["credit_days"]
        comparison[name]["spot_credit_days"] = lasts["spot"]["credit_days"]
    return {
        "currency": "USD",
        "price_table_date": str(prices["date"]),
        "price_table_region": prices["region"],
        "price_table_source": prices["source"],
        "profile": profile_name,
        "pricing": "spot" if spot else "on-demand",
        "vm_and_gpu_per_hour": _r(vm_hourly),
        "boot_disk_per_month": _r(disk_month, 2),
        "bucket_per_month": _r(bucket_month, 2),
        "static_ip_per_hour_running": ip_running,
        "static_ip_per_hour_stopped": ip_stopped,
        "running_per_hour": _r(running_hourly),
        "stopped_per_hour": _r(stopped_hourly),
        "per_month_24h": _r(per_day_24 * DAYS_PER_MONTH, 2),
        f"per_month_{int(hours_per_day_low)}h_per_day": _r(per_day_low * DAYS_PER_MONTH, 2),
        "credits_usd": credits_usd,
        "credit_days_24h": _r(credits_usd / per_day_24, 1) if per_day_24 else None,
        f"credit_days_{int(hours_per_day_low)}h_per_day": _r(credits_usd / per_day_low, 1) if per_day_low else None,
        "hours_per_day": hours_per_day_low,
        "credit_days_at_hours_per_day": _r(credits_usd / per_day_low, 1) if per_day_low else None,
        "money_lasts": money_lasts(prices, profile_name, disk_type, disk_size_gb, bucket_gb, credits_usd,
                                   hours_per_day_low, idle_stop_minutes),
        "profiles": comparison,
        "not_included": "Internet egress (see the table; Opus audio is roughly 0.01 GB per conversation hour), taxes, "
                        "sustained-use discounts, operations on the bucket",
    }
