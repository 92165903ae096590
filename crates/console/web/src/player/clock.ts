// Recording time against wall time: play, pause, speed and seek move one anchor.

export class PlaybackClock {
  private anchorMedia = 0;
  private anchorWall = 0;
  private running = false;
  speed = 1;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Seconds into the recording. */
  position(): number {
    if (!this.running) return this.anchorMedia;
    return this.anchorMedia + ((this.now() - this.anchorWall) / 1000) * this.speed;
  }

  get playing(): boolean {
    return this.running;
  }

  play(): void {
    if (this.running) return;
    this.anchorWall = this.now();
    this.running = true;
  }

  pause(): void {
    this.anchorMedia = this.position();
    this.running = false;
  }

  seek(seconds: number): void {
    this.anchorMedia = Math.max(0, seconds);
    this.anchorWall = this.now();
  }

  setSpeed(speed: number): void {
    this.anchorMedia = this.position();
    this.anchorWall = this.now();
    this.speed = speed;
  }

  /** Milliseconds of wall time until the recording reaches `seconds` (0 if it has). */
  delayUntil(seconds: number): number {
    return Math.max(0, ((seconds - this.position()) / this.speed) * 1000);
  }
}
