"""Migrates a project between two local servers with python-gitlab's bulk
import managers, unchanged, as GitLab's docs show them.

    python tests/clients/python_gitlab_bulk_import.py SOURCE_URL DESTINATION_URL TOKEN PATH

Exits non-zero (with the failing assertion) if anything differs from GitLab.
"""

import sys
import time

import gitlab


def main(source_url, destination_url, token, path):
    gl = gitlab.Gitlab(destination_url, private_token=token)
    configuration = {"url": source_url, "access_token": token}
    entity = {
        "source_full_path": path,
        "source_type": "project_entity",
        "destination_slug": "pg-migrated",
        "destination_namespace": "root",
    }
    migration = gl.bulk_imports.create(
        {"configuration": configuration, "entities": [entity]}
    )
    assert migration.source_type == "gitlab", migration
    assert migration.status == "created", migration

    deadline = time.time() + 120
    while migration.status not in ("finished", "failed"):
        assert time.time() < deadline, f"timed out: {migration.status}"
        time.sleep(0.1)
        migration.refresh()
    assert migration.status == "finished", migration

    assert any(m.id == migration.id for m in gl.bulk_imports.list())
    assert gl.bulk_imports.get(migration.id).status == "finished"
    entities = migration.entities.list()
    assert len(entities) == 1, entities
    assert entities[0] in gl.bulk_import_entities.list(), entities
    entity = migration.entities.get(entities[0].id)
    entity.refresh()
    assert entity.status == "finished", entity
    assert entity.destination_full_path == "root/pg-migrated", entity
    assert entity.stats["issues"]["imported"] > 0, entity.stats

    project = gl.projects.get("root/pg-migrated")
    assert project.id == entity.project_id, project
    print("python-gitlab bulk import: ok")


if __name__ == "__main__":
    main(*sys.argv[1:])
