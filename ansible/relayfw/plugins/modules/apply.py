#!/usr/bin/python
# -*- coding: utf-8 -*-
"""relayfw.relayfw.apply: relayfw apply, with check mode and --diff."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: apply
short_description: Install relayfw's firewall from the host's torrcs
description:
  - Runs C(relayfw apply --detailed-exitcode), which installs the firewall
    compiled from the host's torrcs and C(/etc/relayfw/relayfw.toml) in one
    atomic step, or leaves it alone when the kernel already has it. Exit 2
    (something changed) is C(changed), exit 0 is not, any other exit fails
    with relayfw's one-line reason.
  - In check mode it runs C(relayfw apply --dry-run --detailed-exitcode)
    instead, which changes nothing on the host, and reports C(changed) when
    the firewall would change.
  - With C(--diff), the lines relayfw prints about what changes (or would
    change) are the task's diff.
version_added: "1.0.0"
options:
  confirm:
    description:
      - A confirm window such as C(120s) (C(relayfw apply --confirm)). The
        previous firewall comes back after it unless C(relayfw confirm) runs
        first. Ignored in check mode. When the firewall was already in sync
        no window opens, and I(confirm_pending) is false.
    type: str
  binary:
    description: The relayfw binary, a path or a name looked up in PATH and the sbin directories.
    type: str
    default: relayfw
  global_args:
    description: Global flags for relayfw before the command, such as C(--config PATH).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - relayfw developers
"""

EXAMPLES = r"""
- name: Apply, rolled back after 120 s unless confirmed
  relayfw.relayfw.apply:
    confirm: 120s
  register: relayfw_apply

- name: Keep it, the controller still reaches the host
  ansible.builtin.command: relayfw confirm
  when: relayfw_apply.confirm_pending
  changed_when: true
"""

RETURN = r"""
rc:
  description: relayfw's exit code (0 in sync, 2 changed).
  returned: always
  type: int
stdout:
  description: What relayfw said it changed (or would change).
  returned: always
  type: str
stderr:
  description: relayfw's warnings.
  returned: always
  type: str
confirm_pending:
  description: A confirm window is open, C(relayfw confirm) keeps the firewall.
  returned: always
  type: bool
cmd:
  description: The command run.
  returned: always
  type: list
"""

from ansible.module_utils.basic import AnsibleModule

# relayfw's exit codes (relayfw(8)): 0 in sync, 2 changed.
EXIT_OK = 0
EXIT_CHANGED = 2


def main():
    module = AnsibleModule(
        argument_spec=dict(
            confirm=dict(type="str"),
            binary=dict(type="str", default="relayfw"),
            global_args=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    binary = module.params["binary"]
    if "/" not in binary:
        binary = module.get_bin_path(binary, required=True)
    cmd = [binary] + module.params["global_args"] + ["apply", "--detailed-exitcode"]
    confirm = module.params["confirm"]
    if module.check_mode:
        cmd.append("--dry-run")
    elif confirm:
        cmd += ["--confirm", confirm]

    rc, out, err = module.run_command(cmd)
    if rc not in (EXIT_OK, EXIT_CHANGED):
        reason = (err.strip() or out.strip()).splitlines()
        module.fail_json(
            msg="relayfw apply: exit %d: %s" % (rc, reason[-1] if reason else "no output"),
            rc=rc, stdout=out, stderr=err, cmd=cmd,
        )
    changed = rc == EXIT_CHANGED
    result = dict(
        # Exit 2 is a success: without failed, Ansible fails a result
        # whose rc is not 0.
        failed=False,
        changed=changed,
        rc=rc,
        stdout=out,
        stderr=err,
        cmd=cmd,
        confirm_pending=changed and bool(confirm) and not module.check_mode,
    )
    if changed and module._diff:
        # relayfw's lines already say, in an operator's terms, what is
        # added and removed: shown as they are.
        result["diff"] = dict(prepared=out)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
