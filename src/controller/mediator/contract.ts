/**
 * What a guest and the host's mediator agree on: the service and its methods. The guest's side
 * (submit.ts, `guestlink submit`) needs only this, not the mediator.
 */
export const MEDIATOR_SERVICE = "mediator";
export const SUBMIT_METHOD = "mediator.submit";
export const STATUS_METHOD = "mediator.status";
