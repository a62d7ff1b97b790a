"""Runs an Argo CD health script (deploy/argocd/health.lua) the way Argo CD does, in real Lua.

    python argocd_health.py SCRIPT < object.json

prints {"status": ..., "message": ...} as Argo CD would show them. Argo CD runs a custom
health script in gopher-lua (Lua 5.1) with only the base, package and table libraries and
a safe os (time, date); it sets the global `obj` to the live object, with every number a
float, runs the script as a chunk and takes the table the chunk returns; a status that is
not one of Argo CD's health codes becomes Unknown. This driver does the same in each Lua
that lupa bundles and that a 5.1 script must also run on (Lua 5.1, LuaJIT, Lua 5.4), and
fails unless all of them agree, so the script relies on nothing version-specific.

Exit codes: 0 result printed; 1 the script failed or the runtimes disagree; 2 usage or
input error; 3 lupa is missing (an old test bed venv).
"""

import json
import sys

try:
    import lupa.lua51
    import lupa.lua54
    import lupa.luajit21
except ImportError as e:
    print(
        f"argocd_health.py: {e}: this Python ({sys.executable}) has no lupa, so it comes from "
        "a test bed venv made before lupa was added to tests/testbed/requirements.txt. Run "
        "`tests/testbed/testbed build` to make the new venv, and restart a running test bed "
        "(`tests/testbed/testbed down && tests/testbed/testbed up`, then "
        "`eval \"$(tests/testbed/testbed env)\"`) so that MFA_TESTBED_PYTHON names it.",
        file=sys.stderr,
    )
    sys.exit(3)

RUNTIMES = {"Lua 5.1": lupa.lua51, "LuaJIT 2.1": lupa.luajit21, "Lua 5.4": lupa.lua54}

# gitops-engine's health codes; anything else is shown as Unknown.
HEALTH_CODES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# Leaves only what Argo CD opens for a custom health script (base, package, table and a
# safe os), including no string methods on string values: gopher-lua sets the string
# metatable only when the string library is opened.
SANDBOX = """
local time, date = os.time, os.date
getmetatable("").__index = nil
for _, name in ipairs({"string", "math", "io", "coroutine", "utf8", "bit32", "bit", "jit", "ffi", "debug"}) do
  _G[name] = nil
  package.loaded[name] = nil
  package.preload[name] = nil
end
os = { time = time, date = date }
package.loaded.os = os
"""


def to_lua(lua, value):
    """Converts JSON like Argo CD's decodeValue: objects and arrays to tables, numbers to floats."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def run(module, script, obj):
    lua = module.LuaRuntime(register_eval=False, register_builtins=False, unpack_returned_tuples=False)
    lua.execute(SANDBOX, name="=sandbox")
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script, name="=health.lua")
    if module.lua_type(result) != "table":
        raise TypeError(f"expect table output from Lua script, not {module.lua_type(result) or type(result).__name__}")
    status, message = result["status"], result["message"]
    if status not in HEALTH_CODES:
        return {"status": "Unknown", "message": "Lua returned an invalid health status"}
    return {"status": status, "message": message if message is not None else ""}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        script = f.read()
    try:
        obj = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        print(f"argocd_health.py: stdin is no JSON object: {e}", file=sys.stderr)
        return 2
    results = {}
    for name, module in RUNTIMES.items():
        try:
            results[name] = run(module, script, obj)
        except Exception as e:  # a Lua error is the script's failure, reported as Argo CD would
            print(f"argocd_health.py: {name}: the health script failed: {e}", file=sys.stderr)
            return 1
    distinct = {json.dumps(r, sort_keys=True) for r in results.values()}
    if len(distinct) != 1:
        print(f"argocd_health.py: the Lua runtimes disagree: {json.dumps(results)}", file=sys.stderr)
        return 1
    print(json.dumps(next(iter(results.values()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
