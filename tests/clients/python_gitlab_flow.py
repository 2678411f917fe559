"""Drives the local server with python-gitlab, unchanged, the way users do.

    python tests/clients/python_gitlab_flow.py BASE_URL TOKEN ARCHIVE

Exits non-zero (with the failing assertion) if anything differs from GitLab.
"""

import gzip
import io
import json
import signal
import sys
import tarfile
import time

import gitlab


def wait(refresh, field, done=("finished", "failed"), timeout=120):
    """Refreshes an object until `field` reaches one of `done`."""
    deadline = time.time() + timeout
    while True:
        obj = refresh()
        value = getattr(obj, field)
        if value in done:
            return obj
        assert time.time() < deadline, f"timed out: {field}={value}"
        time.sleep(0.05)


def main(base, token, archive_path):
    gl = gitlab.Gitlab(base, private_token=token)
    gl.auth()
    assert gl.user.username == "root", gl.user

    # Import, and follow it.
    with open(archive_path, "rb") as archive:
        output = gl.projects.import_project(
            archive, path="pg-project", name="PG Project", overwrite=True,
            override_params={"description": "Set by python-gitlab"},
        )
    assert output["import_status"] == "scheduled", output
    project = gl.projects.get(output["id"])
    assert project.path_with_namespace == "root/pg-project", project
    status = project.imports.get()
    status = wait(lambda: (status.refresh(), status)[1], "import_status")
    assert status.import_status == "finished", status.attributes
    assert status.failed_relations == [], status.attributes
    project = gl.projects.get(output["id"])
    assert project.description == "Set by python-gitlab", project.attributes

    # The same project by its path.
    assert gl.projects.get("root/pg-project").id == project.id

    # Export, and download through whatever the server answers.
    export = project.exports.create()
    export = wait(lambda: (export.refresh(), export)[1], "export_status")
    assert export.export_status == "finished", export.attributes
    data = export.download()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        attributes = json.load(tar.extractfile("tree/project.json"))
    assert "tree/project/issues.ndjson" in names, names
    assert attributes["description"] == "Set by python-gitlab", attributes

    # Overwrite, as python-gitlab sends it ("True").
    with open(archive_path, "rb") as archive:
        again = gl.projects.import_project(archive, path="pg-project", overwrite=True)
    assert again["id"] == project.id, again
    wait(lambda: project.imports.get(), "import_status")

    # Lists: owned projects, every page followed through the Link header.
    for i in range(4):
        with open(archive_path, "rb") as archive:
            gl.projects.import_project(archive, path=f"pg-more-{i}")
    owned = gl.projects.list(owned=True, get_all=True, per_page=2)
    paths = sorted(p.path for p in owned)
    assert paths == ["pg-more-0", "pg-more-1", "pg-more-2", "pg-more-3", "pg-project"], paths
    pages = gl.projects.list(owned=True, per_page=2, iterator=True)
    assert pages.total == 5 and pages.total_pages == 3, (pages.total, pages.total_pages)
    assert len(list(pages)) == 5

    # The relations export API through the generic HTTP calls.
    accepted = gl.http_post(f"/projects/{project.id}/export_relations")
    assert accepted == {"message": "202 Accepted"}, accepted
    deadline = time.time() + 120
    while True:
        relations = gl.http_get(f"/projects/{project.id}/export_relations/status")
        if relations and all(r["status"] != 0 for r in relations):
            break
        assert time.time() < deadline, relations
        time.sleep(0.05)
    assert all(r["status"] == 1 for r in relations), relations
    labels = gl.http_get(
        f"/projects/{project.id}/export_relations/download",
        query_data={"relation": "labels"},
        raw=True,
    )
    lines = gzip.decompress(labels.content).splitlines()
    assert lines, "labels.ndjson.gz is empty"

    # Errors come back as python-gitlab's exceptions.
    try:
        gl.projects.get(999999)
    except gitlab.exceptions.GitlabGetError as err:
        assert err.response_code == 404, err
    else:
        raise AssertionError("a missing project was found")
    print("python-gitlab flow: ok")


if __name__ == "__main__":
    signal.alarm(300)  # a client stuck in a loop fails instead of hanging
    main(*sys.argv[1:4])
