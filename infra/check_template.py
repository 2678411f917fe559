#!/usr/bin/env python3
"""Checks what `sam deploy` would create from template.yaml, after the SAM
transform (aws-sam-translator, what CloudFormation runs): the operator's
alarms, dashboard, log groups and limits exist and point at the right
things, and no function's environment holds a secret.

cfn-lint checks the template as written; this checks the resources it
becomes. Run by infra/test.sh; exits non-zero with the reasons on failure.
"""

import json
import os
import re
import sys
from pathlib import Path

from samtranslator.parser.parser import Parser
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent

FUNCTIONS = {
    "ScheduleFunction": "schedule",
    "StatusFunction": "status",
    "DownloadFunction": "download",
    "ImportFunction": "import",
    "ScheduledExportFunction": "scheduled-export",
    "WorkerFunction": "worker",
}

ALARMS = {
    "DeadLetterAlarm",
    "ScheduleDeadLetterAlarm",
    "WorkerErrorsAlarm",
    "WorkerThrottlesAlarm",
    "QueueAgeAlarm",
    "Api5xxAlarm",
    "ScheduledErrorsAlarm",
}

# Names that must never be a function's environment variable, and values
# that must never be one (a parameter holding a secret).
SECRET_NAMES = re.compile(r"TOKEN$|PASSWORD|SECRET_KEY|PRIVATE")
SECRET_PARAMETERS = {"RootToken"}


class StaticPolicies:
    """SAM looks up AWS managed policies by name; these are AWS's ARNs."""

    def load(self):
        return {
            "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
            "AWSLambdaSQSQueueExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
        }


def translated():
    # The transform fills in pseudo parameters; any region will do.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = yaml_parse((ROOT / "template.yaml").read_text())
    # What `sam package` does before CloudFormation sees the template.
    template["Globals"]["Function"]["CodeUri"] = "s3://packaged-code/functions.zip"
    return transform(template, {}, StaticPolicies(), Parser())


def refs(value):
    """Every name a Ref, GetAtt or Sub in `value` points at."""
    found = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                found.update(refs(inner))
            else:
                found.update(refs(inner))
    elif isinstance(value, list):
        for inner in value:
            found.update(refs(inner))
    return found


def check(resources):
    problems = []

    def need(condition, message):
        if not condition:
            problems.append(message)

    def of_type(kind):
        return {name: r for name, r in resources.items() if r["Type"] == kind}

    functions = of_type("AWS::Lambda::Function")
    log_groups = of_type("AWS::Logs::LogGroup")
    for name, binary in FUNCTIONS.items():
        function = functions.get(name)
        need(function is not None, f"{name} is not a Lambda function")
        if function is None:
            continue
        props = function["Properties"]
        logging = props.get("LoggingConfig", {})
        need(logging.get("LogFormat") == "JSON", f"{name} does not log JSON")
        group = logging.get("LogGroup", {}).get("Ref")
        need(group in log_groups, f"{name} logs to no declared log group ({group})")
        if group in log_groups:
            need(
                log_groups[group]["Properties"].get("RetentionInDays") == {"Ref": "LogRetentionDays"},
                f"{group} keeps its logs forever",
            )
        variables = props.get("Environment", {}).get("Variables", {})
        for variable, value in variables.items():
            need(not SECRET_NAMES.search(variable), f"{name} has a secret-looking variable {variable}")
            need(not (refs(value) & SECRET_PARAMETERS), f"{name}'s {variable} holds a secret parameter")
        need("ROOT_TOKEN_SECRET_ARN" in variables, f"{name} is not told where the root token is")
        role = resources.get(props["Role"]["Fn::GetAtt"][0], {})
        statements = json.dumps(role.get("Properties", {}).get("Policies", []))
        need("secretsmanager:GetSecretValue" in statements, f"{name} may not read the root token")

    need(
        "ApiAccessLogs" in log_groups
        and log_groups["ApiAccessLogs"]["Properties"].get("RetentionInDays") == {"Ref": "LogRetentionDays"},
        "the API's access log group is missing or kept forever",
    )

    stages = of_type("AWS::ApiGatewayV2::Stage")
    need(len(stages) == 1, f"expected one HTTP API stage, found {sorted(stages)}")
    for name, stage in stages.items():
        props = stage["Properties"]
        need(
            props.get("AccessLogSettings", {}).get("DestinationArn") == {"Fn::GetAtt": ["ApiAccessLogs", "Arn"]},
            f"{name} writes no access log",
        )
        settings = props.get("DefaultRouteSettings", {})
        need(
            settings.get("ThrottlingRateLimit") == {"Ref": "ApiThrottlingRateLimit"}
            and settings.get("ThrottlingBurstLimit") == {"Ref": "ApiThrottlingBurstLimit"},
            f"{name} is not throttled",
        )
        log_format = props.get("AccessLogSettings", {}).get("Format", "")
        need("header" not in log_format.lower(), f"{name}'s access log would record headers (tokens)")

    mappings = of_type("AWS::Lambda::EventSourceMapping")
    worker_mappings = [m for m in mappings.values() if m["Properties"]["FunctionName"] == {"Ref": "WorkerFunction"}]
    need(len(worker_mappings) == 1, "the worker does not consume the work queue exactly once")
    for mapping in worker_mappings:
        need(
            mapping["Properties"].get("ScalingConfig", {}).get("MaximumConcurrency") == {"Ref": "WorkerMaxConcurrency"},
            "the worker's concurrency is not capped",
        )

    scheduled = functions.get("ScheduledExportFunction", {}).get("Properties", {})
    need(
        scheduled.get("DeadLetterConfig", {}).get("TargetArn") == {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]},
        "failed scheduled events are not kept",
    )

    alarms = of_type("AWS::CloudWatch::Alarm")
    need(set(alarms) == ALARMS, f"alarms: expected {sorted(ALARMS)}, found {sorted(alarms)}")
    for name, alarm in alarms.items():
        actions = alarm["Properties"].get("AlarmActions", [])
        need({"Ref": "AlarmTopic"} in actions, f"{name} notifies no one")
        need(alarm["Properties"].get("AlarmDescription"), f"{name} does not say what it means")
        for target in refs(alarm["Properties"]) - {"AlarmTopic", "AWS::Region"}:
            need(target in resources or target.startswith("AWS::") or target in PARAMETERS, f"{name} watches {target}, which is not in the stack")
    dead_letters = refs(alarms.get("DeadLetterAlarm", {}).get("Properties", {}).get("Dimensions", []))
    need(dead_letters == {"DeadLetterQueue"}, f"the dead-letter alarm watches {dead_letters}")
    need(of_type("AWS::SNS::Topic").keys() == {"AlarmTopic"}, "no alarm topic")

    dashboards = of_type("AWS::CloudWatch::Dashboard")
    need(len(dashboards) == 1, "no dashboard")
    for dashboard in dashboards.values():
        body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
        text, variables = body
        for alarm in ALARMS:
            need(f"${{{alarm}.Arn}}" in text, f"the dashboard does not show {alarm}")
        for metric in ["JobsScheduled", "JobsFinished", "JobsFailed", "JobDuration", "Records", "Bytes", "RelationPartsQueued"]:
            need(f'\\"{metric}\\"' in text, f"the dashboard does not show {metric}")
        # The body must be JSON once CloudFormation substitutes it.
        sample = re.sub(r"\$\{[^}]+\}", "x", text)
        try:
            json.loads(sample)
        except ValueError as err:
            problems.append(f"the dashboard body is not JSON: {err}")

    need(of_type("AWS::SecretsManager::Secret").keys() == {"RootTokenSecret"}, "no root token secret")
    return problems


PARAMETERS = set(yaml_parse((ROOT / "template.yaml").read_text())["Parameters"])


def unexplained_skips():
    """checkov findings skipped in a resource's Metadata without a reason."""
    template = yaml_parse((ROOT / "template.yaml").read_text())
    problems = []
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            if len(str(skip.get("comment", "")).split()) < 5:
                problems.append(f"{name} skips {skip.get('id')} without saying why")
    return problems


def main():
    resources = translated()["Resources"]
    problems = check(resources) + unexplained_skips()
    if problems:
        print("template.yaml, after the SAM transform:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(1)
    print(f"template.yaml: {len(resources)} resources after the SAM transform; alarms, dashboard, log groups, limits and secrets as expected")


if __name__ == "__main__":
    main()
