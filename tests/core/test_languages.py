"""The language files in core/lang: the same keys as en.yml, words that are strings, and German, French and Spanish
requests read on the demo fleet the way an on-call engineer means them."""

import re
from pathlib import Path

import pytest
import yaml

from agent.rules import interpret, is_confident
from core.inventory import get_catalog
from core.language import LANG_DIR, PATTERN_KEYS, WORD_KEYS, load_language

CATALOG = get_catalog()
LANG_FILES = sorted(Path(LANG_DIR).glob("*.yml"))
EN_KEYS = set(yaml.safe_load((Path(LANG_DIR) / "en.yml").read_text(encoding="utf-8")))

PROD_WEB = ["web-01", "web-02", "web-03", "web-04"]

# (text, action, hosts, patch group, reboot, check mode); reboot None for status and cancel.
PATCH_CASES = {
    "de": [
        # exclusion
        ("alle prod Webserver außer web-03 mit Gruppe 2", ["web-01", "web-02", "web-04"], "Group-2", "if_needed",
         False),
        ("alle Datenbanken ausserhalb von prod mit Gruppe 1", ["dev-db-01", "stg-db-01"], "Group-1", "if_needed",
         False),
        # negation after the name
        ("web-01 bitte nicht anfassen, nur web-02 mit Gruppe 3", ["web-02"], "Group-3", "if_needed", False),
        # dry run
        ("Probelauf mit Gruppe 2 auf app-03", ["app-03"], "Group-2", "if_needed", True),
        # no reboot
        ("web-02 und web-03 mit Gruppe 1 patchen, ohne Neustart", ["web-02", "web-03"], "Group-1", "never", False),
        ("web-03 mit Gruppe 3 patchen und danach neu starten", ["web-03"], "Group-3", "always", False),
        # compounds and synonyms
        ("nur die Debian-Server in Produktion mit Gruppe 3", ["app-03", "cache-01", "lb-01", "lb-02"], "Group-3",
         "if_needed", False),
        ("nur Sicherheitsupdates für db-01", ["db-01"], "Group-1", "if_needed", False),
    ],
    "fr": [
        ("tous les serveurs app sauf app-02, groupe 1", ["app-01", "app-03", "dev-app-01", "stg-app-01"], "Group-1",
         "if_needed", False),
        ("ne touche pas à db-02, fais seulement db-01 avec le groupe 1", ["db-01"], "Group-1", "if_needed", False),
        ("simulation du groupe 1 sur lb-02", ["lb-02"], "Group-1", "if_needed", True),
        ("app-03 avec le groupe 2, sans redémarrage", ["app-03"], "Group-2", "never", False),
        ("patche l'app-01 et l'app-02 avec le groupe 3 puis redémarre-les", ["app-01", "app-02"], "Group-3", "always",
         False),
        ("uniquement les machines debian hors production, groupe 2", ["dev-app-01", "dev-db-01", "dev-web-01"],
         "Group-2", "if_needed", False),
        ("mise à jour complète avec noyau sur lb-01", ["lb-01"], "Group-3", "if_needed", False),
    ],
    "es": [
        ("todo staging menos stg-web-02 con el grupo 3", ["stg-app-01", "stg-db-01", "stg-web-01"], "Group-3",
         "if_needed", False),
        ("no toques app-03, solo app-01 con grupo 2", ["app-01"], "Group-2", "if_needed", False),
        ("simula el grupo 3 en web-01 sin aplicar cambios", ["web-01"], "Group-3", "if_needed", True),
        ("parchea db-02 con el grupo 3 pero no reinicies", ["db-02"], "Group-3", "never", False),
        ("las bases de datos redhat de producción con el grupo 1", ["db-01", "db-02"], "Group-1", "if_needed", False),
        ("todos los servidores web que no son de produccion, grupo 2", ["dev-web-01", "stg-web-01", "stg-web-02"],
         "Group-2", "if_needed", False),
        ("solo actualizaciones de seguridad para db-01", ["db-01"], "Group-1", "if_needed", False),
    ],
}

JOB_CASES = {
    "de": [("wie läuft Job 45?", "status", 45), ("brich den Job 77 ab", "cancel", 77)],
    "fr": [("où en est le job 4510 ?", "status", 4510), ("annule le job 77", "cancel", 77)],
    "es": [("¿cómo va el trabajo 312?", "status", 312), ("cancela el job 4535", "cancel", 4535)],
}


@pytest.mark.parametrize("text, hosts, group, reboot, check_mode",
                         [case for cases in PATCH_CASES.values() for case in cases])
def test_patch_requests(text, hosts, group, reboot, check_mode):
    draft, result = interpret(text, CATALOG)
    assert (result.action, result.hosts, result.patch_group) == ("patch", hosts, group)
    assert (result.reboot, result.check_mode) == (reboot, check_mode)
    assert is_confident(draft, result)


@pytest.mark.parametrize("text, action, job_id", [case for cases in JOB_CASES.values() for case in cases])
def test_status_and_cancel_with_a_job_number(text, action, job_id):
    draft, result = interpret(text, CATALOG)
    assert (result.action, result.job_id, result.hosts) == (action, job_id, [])
    assert is_confident(draft, result)


@pytest.mark.parametrize("text, action, hosts", [
    ("ist db-02 schon fertig gepatcht?", "status", ["db-02"]),
    ("arrête le patch sur app-02", "cancel", ["app-02"]),
    ("cancela el parcheo de lb-01", "cancel", ["lb-01"]),
])
def test_status_and_cancel_by_host(text, action, hosts):
    _, result = interpret(text, CATALOG)
    assert (result.action, result.hosts) == (action, hosts)


@pytest.mark.parametrize("history, text, hosts, group, reboot", [
    ("patch web-03 mit Gruppe 1", "und web-04 auch", ["web-03", "web-04"], "Group-1", "if_needed"),
    ("web-02 mit Gruppe 3", "ohne Neustart bitte", ["web-02"], "Group-3", "never"),
    ("tout le staging avec le groupe 3", "enlève stg-app-01", ["stg-db-01", "stg-web-01", "stg-web-02"], "Group-3",
     "if_needed"),
    ("parchea lb-01 con el grupo 2", "mejor cache-01 en vez de lb-01", ["cache-01"], "Group-2", "if_needed"),
])
def test_follow_ups_amend_the_open_request(history, text, hosts, group, reboot):
    previous, _ = interpret(history, CATALOG)
    _, result = interpret(text, CATALOG, previous)
    assert (result.action, result.hosts, result.patch_group, result.reboot) == ("patch", hosts, group, reboot)


@pytest.mark.parametrize("text", [
    "comme pour cache-01 la semaine dernière, groupe 1 sur lb-02",
    "wie letzte Woche bei cache-01: lb-02 mit Gruppe 1",
    "como la semana pasada en cache-01, grupo 1 en lb-02",
])
def test_a_passing_mention_is_no_target(text):
    _, result = interpret(text, CATALOG)
    assert (result.action, result.hosts, result.patch_group) == ("patch", ["lb-02"], "Group-1")


@pytest.mark.parametrize("text", ["lösche die Logs auf web-01", "supprime les logs sur web-01",
                                  "borra los logs de db-01"])
def test_destructive_commands_are_unsupported(text):
    _, result = interpret(text, CATALOG)
    assert result.action == "unsupported"
    assert result.hosts == []


@pytest.mark.parametrize("path", LANG_FILES, ids=lambda p: p.name)
def test_every_language_file_has_the_keys_of_en_and_only_string_words(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(data) == EN_KEYS
    assert data["language"] == path.stem
    for key in WORD_KEYS:
        words = data[key] or []
        assert isinstance(words, list), key
        bad = [w for w in words if not isinstance(w, str) or w != w.lower() or not w.strip()]
        assert not bad, f"{path.name}: {key} has {bad!r} (quote YAML booleans like on/off/yes/no)"
    for group in data["synonyms"]:
        assert isinstance(group, list) and len(group) > 1
        assert all(isinstance(w, str) and w == w.lower() for w in group), f"{path.name}: synonyms {group!r}"
    for word, number in (data["numbers"] or {}).items():
        assert isinstance(word, str) and isinstance(number, int), f"{path.name}: numbers {word!r}: {number!r}"
    for key in set(PATTERN_KEYS) & EN_KEYS - {"phrases"}:
        for source in data[key] or []:
            assert isinstance(source, str), f"{path.name}: {key} {source!r}"
            re.compile(source)
    for rewrite in data["phrases"] or []:
        assert isinstance(rewrite, dict) and len(rewrite) == 1, f"{path.name}: phrases {rewrite!r}"
        (pattern, replacement), = rewrite.items()
        assert isinstance(pattern, str) and isinstance(replacement, str)
        re.compile(pattern)


def test_all_languages_are_loaded():
    assert {"en", "de", "fr", "es"} <= set(load_language().codes)


@pytest.mark.parametrize("text, shown", [
    ("show running jobs", "active"), ("list the failed runs", "failed"), ("zeig mir alle laufenden Jobs", "active"),
    ("liste des jobs en cours", "active"), ("lista de trabajos fallidos", "failed"), ("show recent jobs", None),
])
def test_which_jobs_a_list_shows(text, shown):
    draft, result = interpret(text, CATALOG)
    assert result.action == "list_jobs" and result.jobs == shown
