export type { HealthOptions } from './health.js'
export { health } from './health.js'
export type { Problem } from './problem.js'
export { sendProblem } from './problem.js'
